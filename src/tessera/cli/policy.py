"""``tessera table policy NAME ...``: a data steward sets or shows a table's privacy policy.

The policy lives on the custodians, signed by the steward (and a co-signer when it
weakens privacy); each custodian checks the signatures against its own roster.

The ``table`` group belongs to src/tessera/cli/table.py; it attaches this command with
``register_table_policy(app)`` (one line).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated, Any

import typer

from tessera.cli._common import (
    HomeOption,
    JsonOption,
    emit_json,
    human,
    out_console,
    resolve_home,
    stderr,
)
from tessera.cli._keys import AsOption, CosignOption, acting_signers
from tessera.config import Environment
from tessera.dp import Policy
from tessera.dp.policy import OutputChecks
from tessera.errors import UsageError
from tessera.workflows.custodian import DEFAULT_POLICY
from tessera.workflows.policies import (
    catalog_bounds,
    installed_policy,
    set_policy,
)

__all__ = ["policy", "register_table_policy"]


def _opt(flag: str, text: str) -> Any:
    return typer.Option(flag, help=text, show_default=False)


def _show(env: Environment, name: str) -> dict[str, Any]:
    current = installed_policy(env, name)
    doc = (current.policy if current else DEFAULT_POLICY).to_dict()
    doc["set"] = current is not None
    if current is not None:
        doc["serial"], doc["steward"] = current.serial, current.steward
    return doc


def _confirm_bounds(
    env: Environment, name: str, confirmed: bool, current: Policy | None
) -> tuple[Any, ...]:
    """The catalogue's bounds, confirmed by the steward when they were inferred (once:
    bounds already in the table's policy stay confirmed)."""
    bounds, inferred = catalog_bounds(env, name)
    if current is not None and set(bounds) <= set(current.bounds):
        return bounds
    if inferred and not confirmed and bounds and sys.stdin.isatty():
        stderr.print(f"the bounds of {name} were inferred from the data:")
        for col, lo, hi in bounds:
            stderr.print(f"  {col}: [{lo}, {hi}] (units)")
        confirmed = typer.confirm("Publish these bounds as the table's confirmed bounds?")
    if inferred and bounds and not confirmed:
        raise UsageError(
            "the table's bounds were inferred from the data: check them "
            "(tessera table describe) and confirm with --confirm-bounds"
        )
    return bounds


def _rules(mode: str, **options: Any) -> Policy:
    """The policy the options describe (UsageError before anything else is contacted)."""
    try:
        if mode == "none":
            return Policy.none(min_group_size=int(options["min_group_size"]))
        if mode == "dp":
            return Policy.dp(**options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    raise UsageError("--mode must be 'dp' or 'none'")


ModeOption = Annotated[
    str | None, _opt("--mode", "'dp' (differential privacy) or 'none' (exact answers).")
]
TotalEpsilonOption = Annotated[
    float | None, _opt("--total-epsilon", "Table budget as epsilon (at --delta).")
]
TotalRhoOption = Annotated[float | None, _opt("--total-rho", "Table budget as zCDP rho.")]
ResearcherEpsilonOption = Annotated[
    float | None, _opt("--researcher-epsilon", "Per-researcher budget as epsilon.")
]
ResearcherRhoOption = Annotated[
    float | None, _opt("--researcher-rho", "Per-researcher budget as rho.")
]
DefaultEpsilonOption = Annotated[
    float, typer.Option("--default-epsilon", help="Epsilon a query spends by default.")
]
MaxEpsilonOption = Annotated[
    float | None, _opt("--max-epsilon", "Largest epsilon one query may ask for.")
]
DeltaOption = Annotated[float, typer.Option("--delta", help="Delta for (epsilon, delta).")]
MinGroupSizeOption = Annotated[
    int, typer.Option("--min-group-size", help="Suppress groups with fewer rows.")
]
GrantOption = Annotated[
    list[str] | None,
    _opt(
        "--grant",
        "Only these researchers may query the table (repeatable; default: "
        "keep the current grants, at first every researcher).",
    ),
]
ApprovalOption = Annotated[
    str | None,
    _opt(
        "--approval",
        "'required': custodians run jobs on the table only with its steward's approval of "
        "the request (tessera request); 'none': no approval needed.",
    ),
]
OutputChecksOption = Annotated[
    bool | None,
    typer.Option(
        "--output-checks/--no-output-checks",
        help="Check exact releases for disclosure (threshold, dominance, zeros, "
        "differencing) and hold failing ones for the steward.",
        show_default=False,
    ),
]
CheckThresholdOption = Annotated[
    int | None,
    _opt("--check-threshold", "The output checks' minimum cell count (default 10)."),
]
ConfirmBoundsOption = Annotated[
    bool,
    typer.Option(
        "--confirm-bounds",
        help="Publish bounds that were inferred from the data as the table's confirmed "
        "bounds (checked: tessera table describe).",
    ),
]


def policy(
    name: Annotated[str, typer.Argument(help="Table name.")],
    mode: ModeOption = None,
    total_epsilon: TotalEpsilonOption = None,
    total_rho: TotalRhoOption = None,
    researcher_epsilon: ResearcherEpsilonOption = None,
    researcher_rho: ResearcherRhoOption = None,
    default_epsilon: DefaultEpsilonOption = 1.0,
    max_epsilon: MaxEpsilonOption = None,
    delta: DeltaOption = 1e-6,
    min_group_size: MinGroupSizeOption = 5,
    grant: GrantOption = None,
    confirm_bounds: ConfirmBoundsOption = False,
    approval: ApprovalOption = None,
    output_checks: OutputChecksOption = None,
    check_threshold: CheckThresholdOption = None,
    acting: AsOption = None,
    cosign: CosignOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Set a table's privacy policy on every custodian (--mode dp|none ...), or show it.

    The policy is signed by you, the table's steward; one that weakens privacy (DP off, a
    larger budget, a smaller minimum group, a new grant on a DP table) needs a second
    person's signature too (--cosign NAME: an officer or another steward).  --approval
    and --output-checks alone change only those rules of the current policy.
    """
    env = Environment.load(resolve_home(home))
    governance = _governance(approval, output_checks, check_threshold)
    if mode is None and not governance:
        doc = _show(env, name)
    elif mode is None:
        current = installed_policy(env, name)
        chosen = replace(current.policy if current else DEFAULT_POLICY, **governance)
        doc = _install(env, name, chosen, grant, confirm_bounds, acting, cosign)
    else:
        chosen = _rules(
            mode,
            total_epsilon=total_epsilon,
            total_rho=total_rho,
            researcher_epsilon=researcher_epsilon,
            researcher_rho=researcher_rho,
            default_epsilon=default_epsilon,
            max_epsilon=max_epsilon,
            delta=delta,
            min_group_size=min_group_size,
        )
        current = installed_policy(env, name)
        kept = {
            "approval_required": current.policy.approval_required if current else False,
            "output_checks": current.policy.output_checks if current else None,
        }
        chosen = replace(chosen, **{**kept, **governance})
        doc = _install(env, name, chosen, grant, confirm_bounds, acting, cosign)
    _print_policy({"table": name, **doc}, json_out=json_out)


def _governance(
    approval: str | None, output_checks: bool | None, threshold: int | None
) -> dict[str, Any]:
    """The approval and output-check rules the options ask for (only those given)."""
    out: dict[str, Any] = {}
    if approval is not None:
        if approval not in ("required", "none"):
            raise UsageError("--approval must be 'required' or 'none'")
        out["approval_required"] = approval == "required"
    if threshold is not None and output_checks is False:
        raise UsageError("--check-threshold goes with --output-checks")
    if output_checks is not None or threshold is not None:
        try:
            out["output_checks"] = (
                OutputChecks(threshold=10 if threshold is None else threshold)
                if output_checks is not False
                else None
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return out


def _install(
    env: Environment,
    name: str,
    chosen: Policy,
    grant: list[str] | None,
    confirmed: bool,
    acting: str | None,
    cosign: list[str] | None,
) -> dict[str, Any]:
    """Sign ``chosen`` (with the grants and confirmed bounds it keeps or gains) and set
    it on every custodian; the installed policy as a document."""
    current = installed_policy(env, name)
    grants = tuple(sorted(set(grant))) if grant else (current.policy.grants if current else None)
    bounds = (
        _confirm_bounds(env, name, confirmed, current.policy if current else None)
        if chosen.is_private
        else ()
    )
    chosen = replace(chosen, grants=grants, bounds=bounds)
    steward, *cosigners = acting_signers(env, acting, cosign)
    installed = set_policy(env, name, chosen, steward=steward, cosigners=cosigners)
    doc = {**installed.policy.to_dict(), "set": True}
    doc["serial"], doc["steward"] = installed.serial, installed.steward
    doc["signed_by"] = [steward.name, *[c.name for c in cosigners]]
    return doc


def _print_policy(doc: dict[str, Any], *, json_out: bool) -> None:
    """``doc`` as JSON, or as ``key: value`` lines (None values left out)."""
    if json_out:
        emit_json(doc)
        return
    out = out_console()
    for key, value in doc.items():
        if value is not None:
            out.print(f"{key}: {human(value)}", markup=False)


def register_table_policy(table_app: typer.Typer) -> None:
    """Attach ``policy`` to the ``tessera table`` group."""
    table_app.command("policy")(policy)

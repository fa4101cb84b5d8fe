"""A table's privacy policy: exact release, or DP with budgets (serialisable)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from tessera.dp.accounting import epsilon_for_rho, rho_for_epsilon
from tessera.errors import InputError, PolicyError

__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_MIN_GROUP_SIZE",
    "POLICY_VERSION",
    "OutputChecks",
    "Policy",
    "TablePolicy",
    "strictest",
    "weakenings",
]

POLICY_VERSION = 1
DEFAULT_DELTA = 1e-6
DEFAULT_MIN_GROUP_SIZE = 5


@dataclass(frozen=True)
class OutputChecks:
    """Statistical disclosure control of exact releases (the SACRO/ACRO rules).

    Custodians compute, inside the MPC, how many cells of a release break each rule and
    hold back a release that breaks any, until the table's steward releases it:

    * ``threshold``: a cell counts fewer than ``threshold`` rows (but more than none);
    * ``p_percent`` / ``nk_n``, ``nk_k``: a sum is dominated by its largest contributors
      (the p% rule: the rest is less than p% of the largest; the n,k rule: the ``nk_n``
      largest make more than ``nk_k`` % of the total);
    * ``zeros``: a grouped release has an empty cell (everyone in the other groups);
    * ``differencing``: the cohort differs from one of the same researcher's earlier
      releases on the table by fewer than ``threshold`` rows (and more than none).
    """

    threshold: int = 10
    p_percent: float = 10.0
    nk_n: int = 2
    nk_k: float = 90.0
    zeros: bool = True
    differencing: bool = True

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("the output check threshold must be at least 1")
        if not (math.isfinite(self.p_percent) and 0 <= self.p_percent <= 100):
            raise ValueError("the p% rule's p must be in [0, 100]")
        if self.nk_n != 2:
            raise ValueError("the n,k rule is checked with n = 2")
        if not (math.isfinite(self.nk_k) and 0 < self.nk_k <= 100):
            raise ValueError("the n,k rule's k must be in (0, 100]")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (also what a custodian gives its MPC party)."""
        return {
            "threshold": self.threshold,
            "p_percent": self.p_percent,
            "nk_n": self.nk_n,
            "nk_k": self.nk_k,
            "zeros": self.zeros,
            "differencing": self.differencing,
        }

    @classmethod
    def from_dict(cls, doc: Any) -> OutputChecks:
        """Inverse of :meth:`to_dict` (ValueError / TypeError when malformed)."""
        if not isinstance(doc, dict):
            raise TypeError("output_checks must be an object")
        for key in ("zeros", "differencing"):
            if not isinstance(doc.get(key, True), bool):
                raise TypeError(f"output_checks.{key} must be true or false")
        return cls(
            threshold=int(doc.get("threshold", 10)),
            p_percent=float(doc.get("p_percent", 10.0)),
            nk_n=int(doc.get("nk_n", 2)),
            nk_k=float(doc.get("nk_k", 90.0)),
            zeros=bool(doc.get("zeros", True)),
            differencing=bool(doc.get("differencing", True)),
        )

    def weakenings(self, new: OutputChecks | None) -> list[str]:
        """How ``new`` checks less than these checks (None: no checks at all)."""
        if new is None:
            return ["output checking switched off"]
        out = []
        if new.threshold < self.threshold:
            out.append(f"output check threshold {self.threshold} -> {new.threshold}")
        if new.p_percent < self.p_percent or new.nk_k > self.nk_k:
            out.append("a looser dominance rule")
        if self.zeros and not new.zeros:
            out.append("zeros no longer checked")
        if self.differencing and not new.differencing:
            out.append("differencing no longer checked")
        return out

    @staticmethod
    def strictest(checks: list[OutputChecks]) -> OutputChecks | None:
        """The checks a release over several tables passes: every table's, at once."""
        if not checks:
            return None
        return OutputChecks(
            threshold=max(c.threshold for c in checks),
            p_percent=max(c.p_percent for c in checks),
            nk_k=min(c.nk_k for c in checks),
            zeros=any(c.zeros for c in checks),
            differencing=any(c.differencing for c in checks),
        )


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number")


@dataclass(frozen=True)
class Policy:
    """Per-table release rules.

    ``mode="none"`` releases exact aggregates (only small groups are suppressed).
    ``mode="dp"`` releases with the distributed discrete Gaussian under zCDP:
    ``total_rho`` is the table's whole budget, ``researcher_rho`` each researcher's share
    of it (None: only the total applies), ``default_epsilon`` what a query spends unless
    it asks for less or more (never above ``max_epsilon``), ``delta`` the delta at which
    zCDP is reported as (epsilon, delta)-DP.  Budgets are kept in rho because zCDP
    composes by addition; epsilons are converted with OpenDP.

    ``grants`` names the researchers who may query the table (None: every researcher of
    the custodians' roster).  ``approval_required``: custodians run a job on the table
    only with its steward's signed approval of the request it answers.  ``output_checks``:
    exact releases are checked for disclosure and held back for the steward when they
    fail (:class:`OutputChecks`; None: not checked).  ``bounds`` are the public,
    steward-confirmed bounds of the numeric columns in the MPC's integer units (column,
    lower, upper): DP sensitivities come from them, never from the data.
    """

    mode: Literal["none", "dp"] = "none"
    total_rho: float | None = None
    researcher_rho: float | None = None
    default_epsilon: float = 1.0
    max_epsilon: float | None = None
    delta: float = DEFAULT_DELTA
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE
    grants: tuple[str, ...] | None = None
    bounds: tuple[tuple[str, int, int], ...] = ()
    approval_required: bool = False
    output_checks: OutputChecks | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("none", "dp"):
            raise ValueError("mode must be 'none' or 'dp'")
        if self.mode == "dp" and self.total_rho is None:
            raise ValueError("a DP policy needs a total budget")
        _positive("total budget", self.total_rho)
        _positive("per-researcher budget", self.researcher_rho)
        _positive("default epsilon", self.default_epsilon)
        _positive("max epsilon", self.max_epsilon)
        if not 0 < self.delta < 1:
            raise ValueError("delta must be in (0, 1)")
        if self.min_group_size < 0:
            raise ValueError("minimum group size must be >= 0")
        for col, lower, upper in self.bounds:
            if lower > upper:
                raise ValueError(f"bounds of {col}: lower {lower} > upper {upper}")

    def bound(self, column: str) -> tuple[int, int] | None:
        """The confirmed (lower, upper) of ``column``, or None."""
        return next(((lo, hi) for c, lo, hi in self.bounds if c == column), None)

    @classmethod
    def none(
        cls,
        *,
        min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
        grants: tuple[str, ...] | None = None,
    ) -> Policy:
        """Exact release (no DP), small groups suppressed."""
        return cls(mode="none", min_group_size=min_group_size, grants=grants)

    @classmethod
    def dp(
        cls,
        *,
        total_epsilon: float | None = None,
        total_rho: float | None = None,
        researcher_epsilon: float | None = None,
        researcher_rho: float | None = None,
        default_epsilon: float = 1.0,
        max_epsilon: float | None = None,
        delta: float = DEFAULT_DELTA,
        min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
        grants: tuple[str, ...] | None = None,
        bounds: tuple[tuple[str, int, int], ...] = (),
    ) -> Policy:
        """A DP policy; each budget is given as epsilon (at ``delta``) or as rho, not both."""
        if (total_epsilon is None) == (total_rho is None):
            raise ValueError("give the total budget as epsilon or as rho (exactly one)")
        if researcher_epsilon is not None and researcher_rho is not None:
            raise ValueError("give the per-researcher budget as epsilon or as rho, not both")
        _positive("total epsilon", total_epsilon)
        _positive("per-researcher epsilon", researcher_epsilon)
        if not 0 < delta < 1:
            raise ValueError("delta must be in (0, 1)")
        if total_epsilon is not None:
            total_rho = rho_for_epsilon(total_epsilon, delta)
        if researcher_epsilon is not None:
            researcher_rho = rho_for_epsilon(researcher_epsilon, delta)
        return cls(
            mode="dp",
            total_rho=total_rho,
            researcher_rho=researcher_rho,
            default_epsilon=default_epsilon,
            max_epsilon=max_epsilon,
            delta=delta,
            min_group_size=min_group_size,
            grants=grants,
            bounds=bounds,
        )

    @property
    def is_private(self) -> bool:
        """True when releases under this policy carry DP."""
        return self.mode == "dp"

    def query_rho(self, epsilon: float | None = None) -> float:
        """The rho one query spends at ``epsilon`` (default: the policy default)."""
        if not self.is_private:
            return 0.0
        eps = self.default_epsilon if epsilon is None else epsilon
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError("epsilon must be a positive number")
        if self.max_epsilon is not None and eps > self.max_epsilon:
            raise PolicyError(
                f"epsilon {eps:g} is above this table's per-query maximum {self.max_epsilon:g}"
            )
        return rho_for_epsilon(eps, self.delta)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with epsilon equivalents for people to read)."""
        doc: dict[str, Any] = {
            "version": POLICY_VERSION,
            "mode": self.mode,
            "min_group_size": self.min_group_size,
            "grants": None if self.grants is None else sorted(self.grants),
            "bounds": {c: [lo, hi] for c, lo, hi in self.bounds},
            "approval": "required" if self.approval_required else "none",
            "output_checks": None if self.output_checks is None else self.output_checks.to_dict(),
        }
        if self.is_private:
            assert self.total_rho is not None
            doc.update(
                {
                    "mechanism": "distributed discrete Gaussian",
                    "accounting": "zCDP",
                    "total_rho": self.total_rho,
                    "total_epsilon": epsilon_for_rho(self.total_rho, self.delta),
                    "researcher_rho": self.researcher_rho,
                    "researcher_epsilon": (
                        None
                        if self.researcher_rho is None
                        else epsilon_for_rho(self.researcher_rho, self.delta)
                    ),
                    "default_epsilon": self.default_epsilon,
                    "max_epsilon": self.max_epsilon,
                    "delta": self.delta,
                }
            )
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Policy:
        """Inverse of :meth:`to_dict`; InputError if the document is not a policy."""
        try:
            if int(doc.get("version", 0)) != POLICY_VERSION:
                raise InputError(f"unsupported policy version {doc.get('version')!r}")
            grants = doc.get("grants")
            if grants is not None:
                if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
                    raise ValueError("grants must be a list of names")
                grants = tuple(sorted(set(grants)))
            raw_bounds = doc.get("bounds") or {}
            if not isinstance(raw_bounds, dict):
                raise ValueError("bounds must be an object")
            bounds = tuple(sorted((str(c), int(v[0]), int(v[1])) for c, v in raw_bounds.items()))
            approval = doc.get("approval", "none")
            if approval not in ("none", "required"):
                raise ValueError("approval must be 'none' or 'required'")
            raw_checks = doc.get("output_checks")
            checks = None if raw_checks is None else OutputChecks.from_dict(raw_checks)
            governance: dict[str, Any] = {
                "approval_required": approval == "required",
                "output_checks": checks,
            }
            if doc["mode"] == "none":
                return cls(
                    mode="none",
                    min_group_size=int(doc["min_group_size"]),
                    grants=grants,
                    bounds=bounds,
                    **governance,
                )
            return cls(
                mode="dp",
                total_rho=float(doc["total_rho"]),
                researcher_rho=(
                    None if doc.get("researcher_rho") is None else float(doc["researcher_rho"])
                ),
                default_epsilon=float(doc["default_epsilon"]),
                max_epsilon=None if doc.get("max_epsilon") is None else float(doc["max_epsilon"]),
                delta=float(doc["delta"]),
                min_group_size=int(doc["min_group_size"]),
                grants=grants,
                bounds=bounds,
                **governance,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(f"not a valid privacy policy: {exc}") from None


def strictest(policies: list[Policy]) -> Policy:
    """The policy a job over several tables runs under: the strictest of theirs.

    Grants and bounds stay per table (checked against each table's own policy).
    """
    if not policies:
        raise ValueError("a query needs at least one table")
    min_group = max(p.min_group_size for p in policies)
    private = [p for p in policies if p.is_private]
    governance: dict[str, Any] = {
        "approval_required": any(p.approval_required for p in policies),
        "output_checks": OutputChecks.strictest(
            [p.output_checks for p in policies if p.output_checks is not None]
        ),
    }
    if not private:
        return Policy(mode="none", min_group_size=min_group, **governance)
    caps = [p.max_epsilon for p in private if p.max_epsilon is not None]
    return Policy(
        mode="dp",
        total_rho=min(p.total_rho for p in private if p.total_rho is not None),
        researcher_rho=min(
            (p.researcher_rho for p in private if p.researcher_rho is not None), default=None
        ),
        default_epsilon=min(p.default_epsilon for p in private),
        max_epsilon=min(caps) if caps else None,
        delta=min(p.delta for p in private),
        min_group_size=min_group,
        **governance,
    )


def _looser(old: float | None, new: float | None) -> bool:
    """True when limit ``new`` allows more than ``old`` (None: no limit)."""
    if new is None:
        return old is not None
    return old is not None and new > old


def weakenings(old: Policy, new: Policy) -> list[str]:
    """How ``new`` protects less than ``old`` (empty: it does not).

    Weakening: approval no longer required, output checks off or looser, DP switched
    off, a larger total or per-researcher budget, a larger
    per-query maximum, a larger delta, a smaller minimum group, a new grant on a DP
    table (or all researchers granted where a list was), or narrower bounds (a value
    outside them would then move a sum by more than its declared sensitivity).
    """
    out: list[str] = []
    if old.approval_required and not new.approval_required:
        out.append("approval no longer required")
    if old.output_checks is not None:
        out.extend(old.output_checks.weakenings(new.output_checks))
    if new.min_group_size < old.min_group_size:
        out.append(f"minimum group size {old.min_group_size} -> {new.min_group_size}")
    if old.is_private and not new.is_private:
        out.append("differential privacy switched off")
    if old.is_private and new.is_private:
        if _looser(old.total_rho, new.total_rho):
            out.append("a larger total budget")
        if _looser(old.researcher_rho, new.researcher_rho):
            out.append("a larger per-researcher budget")
        if _looser(old.max_epsilon, new.max_epsilon):
            out.append("a larger per-query epsilon")
        if new.delta > old.delta:
            out.append("a larger delta")
    if new.is_private and old.grants is not None:
        added = sorted(set(new.grants or ()) - set(old.grants))
        if new.grants is None:
            out.append("every researcher granted")
        elif added:
            out.append(f"new grant to {', '.join(added)}")
    for col, lo, hi in old.bounds:
        now = new.bound(col)
        if now is not None and (now[0] > lo or now[1] < hi):
            out.append(f"narrower bounds for {col}")
    return out


@dataclass(frozen=True)
class TablePolicy:
    """A table's policy as the custodians hold it: the steward, a serial, the rules.

    The serial only grows (a custodian refuses an older or equal one), so a policy
    cannot be rolled back by replaying an earlier document.
    """

    table: str
    serial: int
    steward: str
    policy: Policy

    def body(self) -> dict[str, Any]:
        """The body the steward (and a co-signer) sign."""
        return {
            "format": "tessera-policy",
            "version": POLICY_VERSION,
            "table": self.table,
            "serial": self.serial,
            "steward": self.steward,
            "policy": self.policy.to_dict(),
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> TablePolicy:
        """Parse a signed policy body; InputError if it is not one."""
        if body.get("format") != "tessera-policy" or body.get("version") != POLICY_VERSION:
            raise InputError("not a Tessera table policy (format tessera-policy version 1)")
        table, serial, steward = body.get("table"), body.get("serial"), body.get("steward")
        if not (isinstance(table, str) and isinstance(serial, int) and isinstance(steward, str)):
            raise InputError("a table policy names its table, serial and steward")
        if serial < 1:
            raise InputError("a policy serial starts at 1")
        policy = body.get("policy")
        if not isinstance(policy, dict):
            raise InputError("a table policy carries its rules under 'policy'")
        return cls(table, serial, steward, Policy.from_dict(policy))

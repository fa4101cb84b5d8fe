"""``tessera recommend``: treatment effectiveness among the patients most like one patient."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home
from tessera.cli._keys import acting_name, unlock_person
from tessera.config import Environment
from tessera.errors import UsageError
from tessera.mpc.result import UNINFORMATIVE, interval_decimals
from tessera.workflows.recommend import read_patient, recommend_local, recommend_table

__all__ = ["recommend", "register"]


def recommend(
    patient: Annotated[
        Path, typer.Option("--patient", help="Patient JSON: feature values in user units.")
    ],
    table: Annotated[
        str | None, typer.Option("--table", help="Secret-shared table on the custodians.")
    ] = None,
    k: Annotated[
        int | None, typer.Option("--k", help="Number of most similar patients (default 100).")
    ] = None,
    radius: Annotated[
        int | None,
        typer.Option("--radius", help="Instead of --k: every patient within this distance."),
    ] = None,
    csv: Annotated[
        list[Path] | None,
        typer.Option(
            "--csv",
            help="Local mode: the cohort CSV(s); the custodian parties run on this machine.",
        ),
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option("--schema", help="Local mode: table schema YAML with a recommend: section."),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option(
            "--profile",
            help="Recommendation profile YAML (else the recommend: section of the schema "
            "the table was imported or created with).",
        ),
    ] = None,
    epsilon: Annotated[
        float | None,
        typer.Option("--epsilon", help="DP tables: spend this epsilon (default: the policy's)."),
    ] = None,
    researcher: Annotated[
        str | None,
        typer.Option(
            "--researcher",
            "--as",
            help="The researcher who signs the job (and whose budget DP tables charge).",
        ),
    ] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Per treatment: how many of the k most similar patients got it, and how it lasted."""
    if k is not None and radius is not None:
        raise UsageError("give --k or --radius, not both")
    if k is None and radius is None:
        k = 100
    doc = read_patient(patient)
    profile_text = profile.read_text(encoding="utf-8") if profile is not None else None
    if csv:
        if schema is None:
            raise UsageError("--csv needs --schema")
        if epsilon is not None or researcher is not None:
            raise UsageError(
                "--epsilon/--researcher apply to tables with a DP policy (--table); "
                "local mode (--csv) reads your own CSVs and releases exactly"
            )
        result = recommend_local(csv, schema, doc, k=k, radius=radius, profile_text=profile_text)
    else:
        if table is None:
            raise UsageError("give --table NAME (or --csv FILE --schema SCHEMA.yaml)")
        source = profile if profile is not None else schema
        env = Environment.load(resolve_home(home))
        signer = unlock_person(env, acting_name(env, researcher))
        result = recommend_table(
            env,
            table,
            doc,
            None if source is None else source.read_text(encoding="utf-8"),
            k=k,
            radius=radius,
            epsilon=epsilon,
            signer=signer,
        )
    if json_out:
        emit_json(result)
        return
    _print(result)


def _print(result: dict[str, Any]) -> None:
    privacy = result.get("privacy")
    out = Table("treatment", "count", "mean time to failure", "failure share")
    used = [t for t in result["treatments"] if t["count"] and not t.get("suppressed")]
    used.sort(key=lambda t: (-t["count"], t["treatment"]))
    vague = False
    for t in used:
        ivs = t.get("intervals") or {}
        flags = t.get("uninformative") or {}
        vague = vague or any(flags.values())
        mean = t["mean_time_to_failure"]
        share = t.get("failure_share")
        out.add_row(
            t["treatment"],
            _with(t["count"], ivs.get("count"), flags.get("count")),
            "-"
            if mean is None
            else _with(mean, ivs.get("mean_time_to_failure"), flags.get("mean_time_to_failure")),
            "-"
            if share is None
            else _with(share, ivs.get("failure_share"), flags.get("failure_share"), percent=True),
        )
    console = Console()
    about = "about " if privacy is not None and result["mode"] == "radius" else ""
    console.print(f"{about}{result['k']} most similar of {result['rows']} patients")
    console.print(out)
    hidden = sum(1 for t in result["treatments"] if t.get("suppressed"))
    if privacy is None and hidden:
        console.print(
            f"{hidden} treatment(s) given to fewer than {result.get('min_group')} of these "
            "patients not shown (suppressed inside the MPC: the table's minimum group size)",
            soft_wrap=True,
            markup=False,
        )
    if vague:
        console.print(f"(uninformative): {UNINFORMATIVE}", soft_wrap=True, markup=False)
    if privacy is not None:
        _print_guarantee(console, privacy)


def _print_guarantee(console: Console, privacy: dict[str, Any]) -> None:
    left = ", ".join(
        f"{name} epsilon {b['epsilon']:.3g} (rho {b['rho']:.3g})"
        for name, b in (privacy.get("budget_remaining") or {}).items()
    )
    hidden = len(privacy["suppressed_cells"])
    console.print(
        f"differential privacy: ({privacy['epsilon']:.3g}, {privacy['delta']:.0e})-DP "
        f"(rho {privacy['rho']:.3g} zCDP), distributed discrete Gaussian noise from any "
        f"{privacy['honest_custodians_needed']} of {privacy['custodians']} custodians; "
        f"the [intervals] of a row hold together with "
        f"{privacy['confidence']:.0%} probability; {hidden} treatment(s) below "
        f"{privacy['min_group_size']} (noisy) not shown; budget left: {left}",
        soft_wrap=True,
        markup=False,
    )


def _with(
    value: float, interval: list[float] | None, vague: bool | None, *, percent: bool = False
) -> str:
    """``value [low, high]`` rounded to the interval's precision (exact: one decimal)."""
    scale = 100.0 if percent else 1.0
    unit = "%" if percent else ""
    d = 1 if interval is None else interval_decimals([x * scale for x in interval])
    if (percent and interval is None) or isinstance(value, int):
        d = 0  # counts are whole, and so are their intervals
    text = f"{value * scale:.{d}f}{unit}" if isinstance(value, float) else str(value)
    if interval is None:
        return text
    lo, hi = (f"{x * scale:.{d}f}{unit}" for x in interval)
    return f"{text} [{lo}, {hi}]" + (" (uninformative)" if vague else "")


def register(app: typer.Typer) -> None:
    """Add ``tessera recommend`` to the top-level command."""
    app.command("recommend")(recommend)

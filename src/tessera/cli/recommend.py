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
        typer.Option("--profile", help="Recommendation profile YAML (else the schema's)."),
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
        if source is None:
            raise UsageError("give --profile (a YAML with a recommend: section, e.g. the schema)")
        env = Environment.load(resolve_home(home))
        signer = unlock_person(env, acting_name(env, researcher))
        result = recommend_table(
            env,
            table,
            doc,
            source.read_text(encoding="utf-8"),
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
    used = [t for t in result["treatments"] if t["count"]]
    used.sort(key=lambda t: (-t["count"], t["treatment"]))
    for t in used:
        ivs = t.get("intervals") or {}
        mean = t["mean_time_to_failure"]
        share = t.get("failure_share")
        out.add_row(
            t["treatment"],
            _with(str(t["count"]), ivs.get("count"), "{:.0f}"),
            "-"
            if mean is None
            else _with(f"{mean:.1f}", ivs.get("mean_time_to_failure"), "{:.1f}"),
            "-" if share is None else _with(f"{share:.0%}", ivs.get("failure_share"), "{:.0%}"),
        )
    console = Console()
    about = "about " if privacy is not None and result["mode"] == "radius" else ""
    console.print(f"{about}{result['k']} most similar of {result['rows']} patients")
    console.print(out)
    if privacy is not None:
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


def _with(text: str, interval: list[float] | None, fmt: str) -> str:
    if interval is None:
        return text
    return f"{text} [{fmt.format(interval[0])}, {fmt.format(interval[1])}]"


def register(app: typer.Typer) -> None:
    """Add ``tessera recommend`` to the top-level command."""
    app.command("recommend")(recommend)

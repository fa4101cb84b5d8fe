"""``tessera risk``: assess re-identification risk, anonymise, recommend mechanisms."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tessera.cli._common import HomeOption, JsonOption, emit_json, stderr
from tessera.errors import UsageError
from tessera.risk import Criteria, Recommendation, RiskReport
from tessera.workflows.risk import anonymize_csv, assess_csv, recommend_file

__all__ = ["app"]

app = typer.Typer(
    help="Re-identification risk, anonymisation and privacy-technology advice.",
    no_args_is_help=True,
)

_out = Console(highlight=False)


def _columns(value: str, flag: str) -> list[str]:
    cols = [c.strip() for c in value.split(",") if c.strip()]
    if not cols:
        raise UsageError(f"{flag} needs at least one column name")
    return cols


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}g}"


def _print_report(r: RiskReport) -> None:
    d = r.as_dict()
    _out.print(
        f"[bold]Risk assessment[/bold]: {r.rows} rows, {r.classes} equivalence classes "
        f"over {', '.join(r.qi)} (average size {d['average_class_size']:.2f})"
    )
    t = Table(show_header=True, header_style="bold")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("k-anonymity", str(r.k_anonymity))
    t.add_row("sample uniques", f"{r.sample_uniques} ({d['sample_uniqueness']:.2%})")
    if r.sensitive is not None:
        rc = d["recursive_cl_diversity"]
        t.add_row(f"distinct l-diversity ({r.sensitive})", str(r.l_diversity))
        t.add_row("entropy l-diversity", _fmt(r.entropy_l))
        t.add_row(f"recursive (c,l): c for l={rc['l']}", _fmt(rc["c"]))
        t.add_row(f"t-closeness ({r.t_variant} EMD)", _fmt(r.t_closeness))
        t.add_row("delta-disclosure", _fmt(r.delta))
    for who in ("prosecutor", "journalist"):
        a = d[who]
        t.add_row(f"{who} risk: highest / average", f"{_fmt(a['highest'])} / {_fmt(a['average'])}")
        t.add_row(f"{who}: records above {a['threshold']:g}", f"{a['records_at_risk']:.2%}")
    t.add_row("marketer risk", _fmt(r.reidentification.marketer))
    if r.uniqueness is not None:
        u = r.uniqueness.as_dict()
        t.add_row(f"population uniqueness ({u['model']})", _fmt(u["population_uniqueness"]))
        t.add_row(
            "sample uniques that are population-unique",
            _fmt(u["sample_uniques_population_unique"]),
        )
        for name, m in u["models"].items():
            note = m.get("note")
            t.add_row(f"  {name}", f"- ({note})" if note else _fmt(m["fraction"]))
    _out.print(t)
    if r.identifiers:
        _out.print("[bold red]Direct identifiers[/bold red] (HIPAA Safe Harbor):")
        for f in d["direct_identifiers"]:
            _out.print(
                f"  {f['column']}: ({f['category']}) {f['category_name']} - by {f['evidence']}"
            )
    if r.worst:
        w = Table(title="Riskiest equivalence classes", show_header=True, header_style="bold")
        for c in r.qi:
            w.add_column(c)
        w.add_column("size", justify="right")
        if r.sensitive is not None:
            w.add_column("distinct", justify="right")
            w.add_column("t", justify="right")
        for cls in r.worst:
            row = [str(cls.values[c]) for c in r.qi] + [str(cls.size)]
            if r.sensitive is not None:
                row += [str(cls.distinct), _fmt(cls.t, 3)]
            w.add_row(*row)
        _out.print(w)


@app.command("assess")
def assess_cmd(
    csv: Annotated[Path, typer.Argument(help="CSV table with a header row.", show_default=False)],
    qi: Annotated[str, typer.Option("--qi", help="Quasi-identifier columns, comma-separated.")],
    sensitive: Annotated[
        str | None, typer.Option("--sensitive", help="Sensitive attribute column.")
    ] = None,
    population: Annotated[
        int | None, typer.Option("--population", help="Population size N (for uniqueness).")
    ] = None,
    population_table: Annotated[
        Path | None,
        typer.Option("--population-table", help="CSV of the population (exact journalist risk)."),
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Per-record risk threshold for 'records at risk'.")
    ] = 0.2,
    recursive_l: Annotated[
        int | None, typer.Option("--recursive-l", help="l for recursive (c,l)-diversity.")
    ] = None,
    worst: Annotated[int, typer.Option("--worst", help="Riskiest classes to list.")] = 5,
    json_out: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Measure k-anonymity, l-diversity, t-closeness and re-identification risk of CSV."""
    del home  # works on a local file
    if population is not None and population < 1:
        raise UsageError("--population must be positive")
    if worst < 0:
        raise UsageError("--worst must not be negative")
    report = assess_csv(
        csv,
        _columns(qi, "--qi"),
        sensitive,
        population=population,
        population_table=population_table,
        threshold=threshold,
        recursive_l=recursive_l,
        worst=worst,
    )
    if json_out:
        emit_json(report.as_dict())
    else:
        _print_report(report)


@app.command("anonymize")
def anonymize_cmd(
    csv: Annotated[Path, typer.Argument(help="CSV table with a header row.", show_default=False)],
    qi: Annotated[str, typer.Option("--qi", help="Quasi-identifier columns, comma-separated.")],
    k: Annotated[int, typer.Option("--k", help="Target k-anonymity.")],
    hierarchies: Annotated[
        Path, typer.Option("--hierarchies", help="YAML/JSON generalisation hierarchies.")
    ],
    ell: Annotated[int | None, typer.Option("--l", help="Target distinct l-diversity.")] = None,
    t: Annotated[float | None, typer.Option("--t", help="Target t-closeness.")] = None,
    sensitive: Annotated[
        str | None, typer.Option("--sensitive", help="Sensitive column (for --l / --t).")
    ] = None,
    suppression: Annotated[
        float, typer.Option("--suppression-limit", help="Largest fraction of rows to suppress.")
    ] = 0.05,
    max_nodes: Annotated[
        int, typer.Option("--max-nodes", help="Most lattice nodes to evaluate.")
    ] = 5000,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the anonymised CSV here.")
    ] = None,
    drop: Annotated[
        str | None, typer.Option("--drop", help="Columns to remove (direct identifiers).")
    ] = None,
    json_out: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Generalise and suppress CSV until it meets k (and l, t) with the least loss."""
    del home
    if max_nodes < 1:
        raise UsageError("--max-nodes must be positive")
    criteria = Criteria(k=k, l=ell, t=t, suppression_limit=suppression)
    result = anonymize_csv(
        csv,
        _columns(qi, "--qi"),
        criteria,
        hierarchies,
        sensitive=sensitive,
        out=out,
        max_nodes=max_nodes,
        drop=[] if drop is None else _columns(drop, "--drop"),
    )
    doc: dict[str, Any] = result.as_dict() | {"output": None if out is None else str(out)}
    if json_out:
        emit_json(doc)
        return
    u = doc["utility"]
    _out.print(
        f"[bold]Anonymised[/bold] {result.rows_in} rows: k={result.k}"
        + (f", l={result.l}" if result.l is not None else "")
        + (f", t={result.t:.4g}" if result.t is not None else "")
        + f"; suppressed {result.suppressed} rows"
    )
    for col, label in result.labels.items():
        _out.print(f"  {col}: {label}")
    _out.print(
        f"  loss {u['loss']:.4f}, discernibility {u['discernibility']:.6g}, "
        f"average class size {u['average_class_size']:.2f}"
    )
    _out.print(
        f"  lattice: {result.nodes_evaluated} of {result.lattice_size} nodes evaluated"
        + ("" if result.complete else " (search stopped early)")
    )
    if out is not None:
        stderr.print(f"wrote {out}")


def _print_recommendation(rec: Recommendation) -> None:
    _out.print(
        f"[bold]Recommendation for {rec.request.name}[/bold]: "
        f"{rec.primary.replace('_', ' ')} (risk level {rec.risk_level})"
    )
    for a in rec.advice:
        mark = "[green]yes[/green]" if a.recommended else "[dim]no[/dim] "
        _out.print(f"  {mark} {a.mechanism}")
        for reason in a.reasons:
            _out.print(f"        - {reason}")


@app.command("recommend")
def recommend_cmd(
    request: Annotated[
        Path, typer.Argument(help="REQUEST.yaml describing the data request.", show_default=False)
    ],
    data: Annotated[
        Path | None, typer.Option("--data", help="CSV to assess (overrides assess.csv).")
    ] = None,
    json_out: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Recommend which Tessera mechanisms fit REQUEST, with the reasons."""
    del home
    rec = recommend_file(request, data=data)
    if json_out:
        emit_json(rec.as_dict())
    else:
        _print_recommendation(rec)

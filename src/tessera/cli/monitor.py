"""``tessera monitor``: detect attacks in the audit logs and share them (STIX, TAXII, MISP)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home
from tessera.errors import UsageError
from tessera.monitor import MonitorSettings
from tessera.monitor.simulate import SCENARIOS
from tessera.workflows import monitor as flow

__all__ = ["app"]

app = typer.Typer(help="Attack detection over the audit logs; STIX 2.1 / TAXII / MISP sharing.")

NodeOption = Annotated[int | None, typer.Option("--node", help="Scan one node's log only.")]
NoAnomalyOption = Annotated[
    bool, typer.Option("--no-anomaly", help="Rules only (skip the Isolation Forest).")
]


def _settings(no_anomaly: bool) -> MonitorSettings:
    return MonitorSettings(anomaly=None) if no_anomaly else MonitorSettings()


def _result(home: Path | None, node: int | None, no_anomaly: bool) -> flow.ScanResult:
    root = resolve_home(home)
    if node is not None:
        return flow.scan_node(root, node, _settings(no_anomaly))
    return flow.scan_environment(root, _settings(no_anomaly))


@app.command("scan")
def scan(
    node: NodeOption = None,
    no_anomaly: NoAnomalyOption = False,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Verify the logs and run every detection rule and the anomaly model."""
    result = _result(home, node, no_anomaly)
    doc = result.to_json()
    if json_out:
        emit_json(doc)
        return
    typer.echo(f"scanned {result.events} events in {len(result.logs)} log(s)")
    for alert in doc["alerts"]:
        ids = alert["event_ids"]
        shown = ", ".join(ids[:4]) + (f" … (+{len(ids) - 4})" if len(ids) > 4 else "")
        typer.echo(f"[{alert['severity'].upper()}] {alert['title']}: {alert['explanation']}")
        typer.echo(f"    events: {shown}")
    if not doc["alerts"]:
        typer.echo("no alerts")


@app.command("export")
def export(
    stix: Annotated[Path, typer.Option("--stix", help="Write the STIX 2.1 bundle here.")],
    taxii: Annotated[
        str | None, typer.Option("--taxii", help="TAXII 2.1 API root URL to push to.")
    ] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", help="TAXII collection id.")
    ] = None,
    misp: Annotated[str | None, typer.Option("--misp", help="MISP base URL to push to.")] = None,
    tlp: Annotated[str, typer.Option("--tlp", help="white|green|amber|red")] = "amber",
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Do not verify TLS certificates.")
    ] = False,
    node: NodeOption = None,
    no_anomaly: NoAnomalyOption = False,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Export the alerts as STIX 2.1; push to TAXII and/or MISP.

    Credentials come from TESSERA_TAXII_USER / TESSERA_TAXII_PASSWORD and TESSERA_MISP_KEY.
    """
    if (taxii is None) != (collection is None):
        raise UsageError("--taxii and --collection go together")
    result = _result(home, node, no_anomaly)
    summary = flow.export_alerts(
        result,
        stix,
        tlp=tlp,
        taxii=(taxii, collection) if taxii and collection else None,
        taxii_auth=(os.environ.get("TESSERA_TAXII_USER"), os.environ.get("TESSERA_TAXII_PASSWORD")),
        misp=misp,
        misp_key=os.environ.get("TESSERA_MISP_KEY"),
        verify_tls=not insecure,
    )
    if json_out:
        emit_json(summary)
    else:
        typer.echo(
            f"wrote {summary['alerts']} alert(s) as {summary['objects']} STIX objects to {stix}"
        )
        if "taxii" in summary:
            typer.echo(f"TAXII: {summary['taxii']['success']} objects accepted")
        if "misp" in summary:
            typer.echo(f"MISP: {len(summary['misp'])} event(s) created")


@app.command("simulate")
def simulate(
    scenario: Annotated[str, typer.Option("--scenario", help=", ".join(SCENARIOS))],
    days: Annotated[int, typer.Option("--days", help="Days of normal use before now.")] = 10,
    users: Annotated[int, typer.Option("--users")] = 40,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Append synthetic normal use plus one injected attack to the gateway log (demo)."""
    summary = flow.simulate(resolve_home(home), scenario, days=days, users=users, seed=seed)
    if json_out:
        emit_json(summary)
    else:
        typer.echo(
            f"appended {summary['events']} events with one '{scenario}' attack "
            f"({len(summary['injected'])} events)"
        )

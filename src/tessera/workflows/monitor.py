"""Monitor use cases: scan an environment's audit logs, export and share alerts, simulate.

Events come from the gateway log and every node log; an alert's ``event_ids`` become the
FHIR AuditEvent ids (``<origin>.<seq>``) so each alert points at exportable records.  A
log that does not verify is itself reported as an ``audit-tampering`` alert.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tessera.audit import AuditLog
from tessera.core.audit_sink import AuditEvent
from tessera.errors import ConfigError, InputError, UsageError
from tessera.monitor import (
    Alert,
    MonitorSettings,
    push_misp,
    push_taxii,
    scan,
    to_stix,
    validate_stix,
)
from tessera.monitor.simulate import SCENARIOS, build_trace
from tessera.workflows import audit as audit_flow

__all__ = ["ScanResult", "export_alerts", "scan_environment", "scan_node", "simulate"]


@dataclass(frozen=True)
class ScanResult:
    """Alerts over an environment, with the record ids behind each alert."""

    alerts: list[Alert]
    refs: list[str]  # event id used in alerts -> "<origin>.<seq>"
    events: int
    logs: dict[str, bool]  # origin -> verified

    def to_json(self) -> dict[str, Any]:
        """The ``monitor scan --json`` document."""
        out = []
        for alert in self.alerts:
            doc = alert.to_json()
            doc["event_ids"] = [
                self.refs[i] if 0 <= i < len(self.refs) else str(i) for i in alert.event_ids
            ]
            out.append(doc)
        return {"events": self.events, "logs": self.logs, "alerts": out}


def _logs(home: Path, node: int | None) -> list[AuditLog]:
    if node is not None:
        return [audit_flow.node_log(home, node, create=False)]
    logs = []
    if (audit_flow.log_folder(home) / "log.json").exists():
        logs.append(audit_flow.gateway_log(home))
    logs += [audit_flow.node_log(home, i) for i in audit_flow.node_ids(home)]
    return logs


def _scan(home: Path, logs: list[AuditLog], settings: MonitorSettings | None) -> ScanResult:
    events: list[tuple[int, AuditEvent]] = []
    refs: list[str] = []
    verified: dict[str, bool] = {}
    tamper: list[Alert] = []
    for log in logs:
        node = None if log.origin == audit_flow.GATEWAY else int(log.origin.split("-", 1)[1])
        report = audit_flow.verify_log(home, node=node, note=False)
        verified[log.origin] = report.ok
        try:
            for seq, event in log.events():
                events.append((len(refs), event))
                refs.append(f"{log.origin}.{seq}")
        except InputError:
            if report.ok:
                raise
            # a damaged entry cannot be read: scan what precedes it, report the damage
        if not report.ok:
            bad = len(refs)  # a reference to the bad entry itself, readable or not
            refs.append(f"{log.origin}.{report.first_bad or 0}")
            now = datetime.now(UTC)
            tamper.append(
                Alert(
                    kind="audit-tampering",
                    severity="critical",
                    event_ids=(bad,),
                    explanation=f"the audit log {log.origin} does not verify: first bad entry "
                    f"{report.first_bad} ({report.problem}).",
                    first_seen=now,
                    last_seen=now,
                    subject={"node": log.origin},
                )
            )
    alerts = tamper + scan(events, settings)
    return ScanResult(alerts, refs, len(events), verified)


def scan_environment(home: Path, settings: MonitorSettings | None = None) -> ScanResult:
    """Verify and scan the gateway log and every node log of ``home``."""
    return _scan(home, _logs(home, None), settings)


def scan_node(home: Path, node: int, settings: MonitorSettings | None = None) -> ScanResult:
    """Verify and scan one node's log (what a node runs periodically)."""
    return _scan(home, _logs(home, node), settings)


def export_alerts(
    result: ScanResult,
    stix_path: Path,
    *,
    tlp: str = "amber",
    taxii: tuple[str, str] | None = None,
    taxii_auth: tuple[str | None, str | None] = (None, None),
    misp: str | None = None,
    misp_key: str | None = None,
    verify_tls: bool = True,
) -> dict[str, Any]:
    """Write the STIX bundle (validated), then push it to TAXII and/or MISP if asked."""
    bundle = to_stix(result.alerts, tlp=tlp)
    validate_stix(bundle)
    tmp = stix_path.with_name(stix_path.name + ".tmp")
    tmp.write_text(json.dumps(bundle, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, stix_path)
    summary: dict[str, Any] = {
        "stix": str(stix_path),
        "alerts": len(result.alerts),
        "objects": len(bundle["objects"]),
    }
    if taxii is not None:
        summary["taxii"] = push_taxii(
            bundle,
            taxii[0],
            taxii[1],
            user=taxii_auth[0],
            password=taxii_auth[1],
            verify_tls=verify_tls,
        )
    if misp is not None:
        if not misp_key:
            raise ConfigError("set TESSERA_MISP_KEY to push to MISP")
        summary["misp"] = push_misp(result.alerts, misp, misp_key, verify_tls=verify_tls, tlp=tlp)
    return summary


def simulate(
    home: Path,
    scenario: str,
    *,
    days: int = 10,
    users: int = 40,
    seed: int = 1,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Write ``days`` of synthetic normal use ending now, with one ``scenario`` attack."""
    if scenario not in SCENARIOS:
        raise UsageError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    if not 10 <= users <= 2000:
        raise UsageError("--users must be between 10 and 2000")
    if not 8 <= days <= 60:
        raise UsageError("--days must be between 8 and 60 (baselines need a week)")
    end = (now or datetime.now(UTC)).replace(microsecond=0)
    start = (end - timedelta(days=days)).replace(hour=0, minute=0, second=0)
    trace = build_trace(
        np.random.default_rng(seed),
        days=days,
        users=users,
        per_scenario=1,
        start=start,
        scenarios=(scenario,),
    )
    log = audit_flow.gateway_log(home)
    first = log.size
    batch = 5000
    for i in range(0, len(trace.events), batch):
        log.append(trace.events[i : i + batch])
    injected = [f"{log.origin}.{first + i}" for i in trace.instances[0][1]]
    return {"scenario": scenario, "events": len(trace.events), "injected": injected}

"""Run every rule and the anomaly model over a sequence of events."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tessera.monitor import rules_access as ra
from tessera.monitor import rules_data as rd
from tessera.monitor.alerts import Alert, Indexed, when
from tessera.monitor.anomaly import AnomalySettings, anomalies

__all__ = ["RULES", "MonitorSettings", "scan"]


@dataclass(frozen=True)
class MonitorSettings:
    """Thresholds of every rule, and whether to run the anomaly model."""

    access: ra.AccessThresholds = field(default_factory=ra.AccessThresholds)
    data: rd.DataThresholds = field(default_factory=rd.DataThresholds)
    anomaly: AnomalySettings | None = field(default_factory=AnomalySettings)


def _access(
    rule: Callable[[Sequence[Indexed], ra.AccessThresholds], list[Alert]],
) -> Callable[[Sequence[Indexed], MonitorSettings], list[Alert]]:
    return lambda events, s: rule(events, s.access)


def _data(
    rule: Callable[[Sequence[Indexed], rd.DataThresholds], list[Alert]],
) -> Callable[[Sequence[Indexed], MonitorSettings], list[Alert]]:
    return lambda events, s: rule(events, s.data)


#: Alert kind -> rule.
RULES: dict[str, Callable[[Sequence[Indexed], MonitorSettings], list[Alert]]] = {
    "password-spraying": _access(ra.password_spraying),
    "brute-force": _access(ra.brute_force),
    "off-hours-login": _access(ra.off_hours_logins),
    "impossible-travel": _access(ra.impossible_travel),
    "enumeration": _access(ra.enumeration),
    "share-harvesting": _data(rd.share_harvesting),
    "fragment-tampering": _data(rd.fragment_tampering),
    "bulk-export": _data(rd.bulk_export),
    "differencing": _data(rd.differencing),
    "small-cell-probing": _data(rd.small_cell_probing),
    "budget-probing": _data(rd.budget_probing),
    "audit-tampering": _data(rd.audit_tampering),
    "mpc-abort": _data(rd.mpc_aborts),
}


def scan(events: Iterable[Indexed], settings: MonitorSettings | None = None) -> list[Alert]:
    """Every alert over ``events`` ((id, event) pairs), oldest first."""
    settings = settings or MonitorSettings()
    ordered = sorted(
        ((i, e) for i, e in events if e.recorded is not None), key=lambda p: (when(p[1]), p[0])
    )
    alerts: list[Alert] = []
    for rule in RULES.values():
        alerts.extend(rule(ordered, settings))
    if settings.anomaly is not None:
        alerts.extend(anomalies(ordered, settings.anomaly))
    alerts.sort(key=lambda a: (a.first_seen, a.kind, a.event_ids))
    return alerts

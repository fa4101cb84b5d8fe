"""Alerts and the sliding-window burst finder the rules share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tessera.core.audit_sink import AuditEvent

__all__ = ["KINDS", "SEVERITIES", "Alert", "Indexed", "bursts"]

#: An event with its id (the log's sequence number, or the index in a trace).
Indexed = tuple[int, AuditEvent]

SEVERITIES = ("low", "medium", "high", "critical")

#: Alert kind -> (title, MITRE ATT&CK technique id or "", technique name).
KINDS: dict[str, tuple[str, str, str]] = {
    "password-spraying": ("Password spraying", "T1110.003", "Password Spraying"),
    "brute-force": ("Brute-force login", "T1110.001", "Password Guessing"),
    "share-harvesting": (
        "Fragment (share) harvesting",
        "T1530",
        "Data from Cloud Storage",
    ),
    "fragment-tampering": (
        "Fragment tampering",
        "T1565.001",
        "Stored Data Manipulation",
    ),
    "bulk-export": (
        "Bulk export above the user's baseline",
        "T1567",
        "Exfiltration Over Web Service",
    ),
    "off-hours-login": ("Login outside the user's usual hours", "T1078", "Valid Accounts"),
    "impossible-travel": ("Impossible travel between logins", "T1078", "Valid Accounts"),
    "enumeration": ("Object-id enumeration", "T1619", "Cloud Storage Object Discovery"),
    "differencing": (
        "Differencing / tracker queries",
        "T1213",
        "Data from Information Repositories",
    ),
    "small-cell-probing": (
        "Small-cell probing",
        "T1213",
        "Data from Information Repositories",
    ),
    "budget-probing": ("Privacy-budget probing through many accounts", "T1136", "Create Account"),
    "audit-tampering": ("Audit log tampering", "T1070", "Indicator Removal"),
    "mpc-abort": ("Custodian repeatedly aborting MPC jobs", "T1489", "Service Stop"),
    "anomaly": ("Unusual activity (anomaly model)", "", ""),
}


@dataclass(frozen=True)
class Alert:
    """One detection: what, how bad, the events behind it, and why in plain words."""

    kind: str
    severity: str
    event_ids: tuple[int, ...]
    explanation: str
    first_seen: datetime
    last_seen: datetime
    subject: dict[str, str] = field(default_factory=dict)
    score: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown alert kind {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    @property
    def title(self) -> str:
        """A short human title."""
        return KINDS[self.kind][0]

    @property
    def technique(self) -> str:
        """The MITRE ATT&CK technique id ('' for the anomaly model)."""
        return KINDS[self.kind][1]

    def to_json(self) -> dict[str, Any]:
        """The ``monitor scan --json`` shape of one alert."""
        return {
            "kind": self.kind,
            "title": self.title,
            "severity": self.severity,
            "event_ids": list(self.event_ids),
            "explanation": self.explanation,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "subject": dict(self.subject),
            "attack_technique": self.technique or None,
            "score": round(self.score, 4),
        }


def when(event: AuditEvent) -> datetime:
    """The event time (rules only see recorded events)."""
    if event.recorded is None:
        raise ValueError("monitor rules need recorded events")
    return event.recorded


def bursts(
    items: Sequence[Indexed],
    span: timedelta,
    *,
    min_count: int,
    distinct: Callable[[AuditEvent], Hashable] | None = None,
    min_distinct: int = 0,
) -> list[list[Indexed]]:
    """Clusters of time-sorted ``items`` where some window of ``span`` holds enough events.

    A window qualifies with at least ``min_count`` events and ``min_distinct`` distinct
    ``distinct(event)`` values; overlapping qualifying windows merge into one cluster.
    """
    clusters: list[list[Indexed]] = []
    counts: Counter[Hashable] = Counter()
    left = 0
    cur_lo = cur_hi = -1
    for right, (_, ev) in enumerate(items):
        if distinct is not None:
            counts[distinct(ev)] += 1
        t = when(ev)
        while t - when(items[left][1]) > span:
            if distinct is not None:
                key = distinct(items[left][1])
                counts[key] -= 1
                if not counts[key]:
                    del counts[key]
            left += 1
        size = right - left + 1
        if size >= min_count and (distinct is None or len(counts) >= min_distinct):
            if cur_hi >= left:  # overlaps the open cluster: extend it
                cur_hi = right
            else:
                if cur_hi >= 0:
                    clusters.append(list(items[cur_lo : cur_hi + 1]))
                cur_lo, cur_hi = left, right
    if cur_hi >= 0:
        clusters.append(list(items[cur_lo : cur_hi + 1]))
    return clusters


def make_alert(
    kind: str,
    severity: str,
    items: Sequence[Indexed],
    explanation: str,
    subject: dict[str, str],
    score: float = 1.0,
) -> Alert:
    """An alert over ``items`` (time-sorted), spanning their first and last times."""
    return Alert(
        kind=kind,
        severity=severity,
        event_ids=tuple(sorted(i for i, _ in items)),
        explanation=explanation,
        first_seen=min(when(e) for _, e in items),
        last_seen=max(when(e) for _, e in items),
        subject=subject,
        score=score,
    )

"""Unsupervised anomaly model: an Isolation Forest over per-user, per-day activity.

Each (user, day) becomes a vector of counts (events, failed logins, refusals, exports,
queries, fragment fetches outside a job, distinct objects, distinct addresses, share of
night-time events).  scikit-learn's :class:`~sklearn.ensemble.IsolationForest` scores
them; the most isolated user-days become low-severity ``anomaly`` alerts whose
explanation names the features furthest from the population (robust z-scores).  The
rules catch the known attacks; this catches what nobody wrote a rule for.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tessera.core.audit_sink import AuditEvent
from tessera.monitor.alerts import Alert, Indexed, make_alert, when
from tessera.monitor.rules_data import EXPORT_ACTIONS

__all__ = ["FEATURES", "AnomalySettings", "anomalies", "features"]

FEATURES = (
    "events",
    "failed_logins",
    "refusals",
    "exports",
    "queries",
    "loose_fetches",
    "objects",
    "addresses",
    "night_share",
)


@dataclass(frozen=True)
class AnomalySettings:
    """How many user-days to flag and how the forest is built (seeded: reproducible)."""

    contamination: float = 0.003
    trees: int = 200
    seed: int = 7
    min_rows: int = 50


def _vector(items: Sequence[AuditEvent]) -> list[float]:
    night = sum(1 for e in items if when(e).hour < 6 or when(e).hour >= 22)
    return [
        float(len(items)),
        float(sum(1 for e in items if e.action == "login" and e.outcome == "failure")),
        float(sum(1 for e in items if e.outcome in ("denied", "not_found"))),
        float(sum(1 for e in items if e.action in EXPORT_ACTIONS)),
        float(sum(1 for e in items if e.action == "query")),
        float(sum(1 for e in items if e.action == "fragment.fetch" and not e.detail.get("job"))),
        float(len({e.entity for e in items if e.entity})),
        float(len({e.address for e in items if e.address})),
        night / len(items),
    ]


def features(
    events: Sequence[Indexed],
) -> tuple[list[tuple[str, str]], np.ndarray, list[list[Indexed]]]:
    """Keys (user, day), the feature matrix, and the events behind each row."""
    groups: dict[tuple[str, str], list[Indexed]] = defaultdict(list)
    for i, e in events:
        if e.user:
            groups[(e.user, when(e).date().isoformat())].append((i, e))
    keys = sorted(groups)
    rows = [_vector([e for _, e in groups[k]]) for k in keys]
    matrix = np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURES))
    return keys, matrix, [groups[k] for k in keys]


def anomalies(events: Sequence[Indexed], settings: AnomalySettings) -> list[Alert]:
    """Low-severity alerts for the most isolated user-days."""
    keys, matrix, members = features(events)
    if len(keys) < settings.min_rows:
        return []
    from sklearn.ensemble import IsolationForest  # here: a second to import, when needed

    model = IsolationForest(
        n_estimators=settings.trees,
        contamination=settings.contamination,
        random_state=settings.seed,
    )
    flags = model.fit_predict(matrix)
    scores = -model.score_samples(matrix)
    median = np.median(matrix, axis=0)
    mad = np.median(np.abs(matrix - median), axis=0) * 1.4826 + 1e-9
    spread = np.maximum(mad, 0.1 * np.abs(median) + 1.0)
    alerts = []
    for row in np.flatnonzero(flags == -1):
        z = (matrix[row] - median) / spread
        top = np.argsort(-np.abs(z))[:2]
        reasons = ", ".join(
            f"{FEATURES[j]} {matrix[row, j]:.3g} (typical {median[j]:.3g})" for j in top
        )
        user, day = keys[row]
        alerts.append(
            make_alert(
                "anomaly",
                "low",
                members[row],
                f"{user}'s activity on {day} is unlike the other user-days: {reasons}.",
                {"user": user},
                score=float(scores[row]),
            )
        )
    return alerts

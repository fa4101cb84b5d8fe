"""Rules over data access: fragments, exports, queries, budgets, MPC jobs, the audit log.

Event conventions (see docs/monitor.md):

* ``fragment.fetch`` at a node (``source="node-<i>"``), ``entity`` = object id,
  ``detail["job"]`` = the sanctioned job (a gateway-approved ``vault get``, a repair);
* a fragment that fails its integrity check: ``fragment.verify``/``fragment.fetch`` with
  outcome ``failure`` (``detail["reason"]="integrity"``);
* exports: ``vault.get``, ``export``, ``dicom.reidentify`` (``detail["bytes"]``);
* ``query`` with ``entity`` = table, ``detail["rows"]`` = cohort size,
  ``detail["query_hash"]``; refusals carry ``detail["reason"]`` = ``small-cell`` or
  ``budget``;
* ``mpc.abort`` with ``source`` = the custodian that aborted;
* ``audit.verify`` with outcome ``failure`` when a log did not verify;
* a vault whose stores lost files the owner's signed catalogue record commits to (stores
  deleted, or restored from an old copy): any ``vault.*`` event with outcome ``failure``
  and ``detail["reason"] = "vault-lost"`` or ``detail["error"] = "vault_lost"``.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from tessera.core.audit_sink import AuditEvent
from tessera.monitor.alerts import Alert, Indexed, bursts, make_alert, when

__all__ = [
    "EXPORT_ACTIONS",
    "DataThresholds",
    "audit_tampering",
    "budget_probing",
    "bulk_export",
    "differencing",
    "fragment_tampering",
    "mpc_aborts",
    "share_harvesting",
    "small_cell_probing",
]

EXPORT_ACTIONS = frozenset({"vault.get", "export", "dicom.reidentify"})


@dataclass(frozen=True)
class DataThresholds:
    """Tunable thresholds of the data rules (defaults tuned on bench/monitor.py)."""

    k: int = 3  # fragments that reconstruct an object (the vault threshold)
    harvest_window: timedelta = timedelta(hours=24)
    export_min_history_days: int = 5
    export_factor: float = 3.0
    export_margin: int = 15
    diff_window: timedelta = timedelta(hours=3)
    diff_max_rows: int = 3
    diff_min_rows: int = 10
    diff_min_pairs: int = 3
    small_cell: int = 10
    small_window: timedelta = timedelta(hours=24)
    small_queries: int = 4
    budget_window: timedelta = timedelta(hours=24)
    budget_accounts: int = 3
    abort_window: timedelta = timedelta(hours=48)
    abort_count: int = 4


def _group(items: Sequence[Indexed], *keys: str) -> dict[tuple[str, ...], list[Indexed]]:
    groups: dict[tuple[str, ...], list[Indexed]] = defaultdict(list)
    for item in items:
        groups[tuple(str(getattr(item[1], k)) for k in keys)].append(item)
    return groups


def share_harvesting(events: Sequence[Indexed], th: DataThresholds) -> list[Alert]:
    """Fragments of one object fetched from k or more nodes outside a sanctioned job."""
    loose = [
        (i, e)
        for i, e in events
        if e.action == "fragment.fetch" and e.outcome == "success" and not e.detail.get("job")
    ]
    alerts = []
    for (user, entity), items in _group(loose, "user", "entity").items():
        for cluster in bursts(
            items,
            th.harvest_window,
            min_count=th.k,
            distinct=lambda e: e.source,
            min_distinct=th.k,
        ):
            nodes = sorted({e.source for _, e in cluster})
            alerts.append(
                make_alert(
                    "share-harvesting",
                    "critical",
                    cluster,
                    f"{user or 'someone'} fetched fragments of {entity} from {len(nodes)} "
                    f"nodes ({', '.join(nodes)}) without a sanctioned job; {th.k} fragments "
                    "reconstruct the object.",
                    {"user": user, "entity": entity, "address": cluster[0][1].address},
                )
            )
    return alerts


def _vault_lost(events: Sequence[Indexed]) -> list[Alert]:
    """A vault that lost committed files (deleted or rolled-back stores), per day."""
    days: dict[str, list[Indexed]] = defaultdict(list)
    for i, e in events:
        if (
            e.action.startswith("vault.")
            and e.outcome == "failure"
            and (e.detail.get("reason") == "vault-lost" or e.detail.get("error") == "vault_lost")
        ):
            days[when(e).date().isoformat()].append((i, e))
    return [
        make_alert(
            "fragment-tampering",
            "critical",
            items,
            f"the vault lost files its owner's signed catalogue record commits to "
            f"({len(items)} vault command(s) on {day} found them gone): stores were "
            "deleted, damaged beyond repair or restored from an older copy.",
            {"node": "vault"},
        )
        for day, items in days.items()
    ]


def fragment_tampering(events: Sequence[Indexed], th: DataThresholds) -> list[Alert]:
    """Fragments that failed their integrity check, grouped per node and day; a vault that
    lost committed files (critical)."""
    bad = [
        (i, e)
        for i, e in events
        if e.action in ("fragment.verify", "fragment.fetch", "vault.verify")
        and e.outcome == "failure"
        and e.detail.get("reason", "integrity") == "integrity"
    ]
    alerts = []
    groups: dict[tuple[str, str], list[Indexed]] = defaultdict(list)
    for i, e in bad:
        groups[(_holder(e), when(e).date().isoformat())].append((i, e))
    for (holder, day), items in groups.items():
        objects = sorted({e.entity for _, e in items if e.entity})
        named = f" ({', '.join(objects[:5])}{' …' if len(objects) > 5 else ''})" if objects else ""
        alerts.append(
            make_alert(
                "fragment-tampering",
                "high",
                items,
                f"{len(items)} check(s) found fragments held by {holder} that failed their "
                f"authentication on {day}{named}: stored data was altered.",
                {"node": holder},
            )
        )
    return alerts + _vault_lost(events)


def _holder(event: AuditEvent) -> str:
    """Who holds the failing fragments: the stores a vault check named, else the node
    that reported them (a command's own source is the gateway, never the holder)."""
    stores = str(event.detail.get("stores", ""))
    if stores:
        return f"store{'s' if ',' in stores else ''} {stores.replace(',', ', ')}"
    if event.source and event.source != "gateway":
        return event.source
    return "a store"


def bulk_export(events: Sequence[Indexed], th: DataThresholds) -> list[Alert]:
    """A user's exports on one day far above that user's own daily baseline."""
    per_user: dict[str, dict[str, list[Indexed]]] = defaultdict(lambda: defaultdict(list))
    for i, e in events:
        if e.action in EXPORT_ACTIONS and e.outcome == "success":
            per_user[e.user][when(e).date().isoformat()].append((i, e))
    alerts = []
    for user, days in per_user.items():
        history: list[int] = []
        for day in sorted(days):
            items = days[day]
            if len(history) >= th.export_min_history_days:
                baseline = statistics.median(history)
                spread = statistics.pstdev(history)
                limit = max(th.export_factor * baseline, baseline + 6 * spread) + th.export_margin
                if len(items) > limit:
                    alerts.append(
                        make_alert(
                            "bulk-export",
                            "high",
                            items,
                            f"{user} exported {len(items)} objects on {day}; their usual "
                            f"day is {baseline:.0f} (limit {limit:.0f}).",
                            {"user": user, "address": items[0][1].address},
                            score=len(items) / max(limit, 1.0),
                        )
                    )
                    continue  # keep the spike out of the baseline
            history.append(len(items))
    return alerts


def _rows(e: AuditEvent) -> int | None:
    value = e.detail.get("rows")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def differencing(events: Sequence[Indexed], th: DataThresholds) -> list[Alert]:
    """Aggregate queries on one table whose row sets differ by only a few rows.

    Each query is compared with the user's earlier queries on the table within the
    window; a query counts as a "near twin" when its cohort differs from an earlier,
    different query by 1..``diff_max_rows`` rows.  Enough twins around one query is the
    shape of a tracker / differencing attack.
    """
    queries = [
        (i, e)
        for i, e in events
        if e.action == "query" and e.outcome == "success" and (_rows(e) or 0) >= th.diff_min_rows
    ]
    alerts = []
    for (user, table), items in _group(queries, "user", "entity").items():
        flagged: dict[int, set[int]] = defaultdict(set)  # anchor position -> twins
        for b, (_, eb) in enumerate(items):
            rb = _rows(eb) or 0
            for a in range(b - 1, -1, -1):
                ea = items[a][1]
                if when(eb) - when(ea) > th.diff_window:
                    break
                if ea.detail.get("query_hash") == eb.detail.get("query_hash"):
                    continue
                if 1 <= abs(rb - (_rows(ea) or 0)) <= th.diff_max_rows:
                    flagged[a].add(b)
                    flagged[b].add(a)
        used: set[int] = set()
        for anchor in sorted(flagged, key=lambda p: -len(flagged[p])):
            twins = flagged[anchor] - used
            if anchor in used or len(twins) < th.diff_min_pairs:
                continue
            group = sorted({anchor, *twins})
            used.update(group)
            cluster = [items[p] for p in group]
            rows = sorted({_rows(e) or 0 for _, e in cluster})
            alerts.append(
                make_alert(
                    "differencing",
                    "high",
                    cluster,
                    f"{user} ran {len(cluster)} different aggregate queries on {table} whose "
                    f"cohorts differ by at most {th.diff_max_rows} rows ({rows[0]}..{rows[-1]} "
                    "rows): subtracting them isolates individual patients.",
                    {"user": user, "entity": table},
                )
            )
    return alerts


def small_cell_probing(events: Sequence[Indexed], th: DataThresholds) -> list[Alert]:
    """Repeated queries for tiny cohorts (answered small or refused as small cells)."""
    small = [
        (i, e)
        for i, e in events
        if e.action == "query"
        and (
            (e.outcome == "success" and (_rows(e) is not None) and (_rows(e) or 0) < th.small_cell)
            or (e.outcome == "denied" and e.detail.get("reason") == "small-cell")
        )
    ]
    alerts = []
    for (user,), items in _group(small, "user").items():
        for cluster in bursts(items, th.small_window, min_count=th.small_queries):
            tables = sorted({e.entity for _, e in cluster})
            alerts.append(
                make_alert(
                    "small-cell-probing",
                    "medium",
                    cluster,
                    f"{user} asked {len(cluster)} queries for cohorts under {th.small_cell} "
                    f"people on {', '.join(tables)} within a day: probing small cells.",
                    {"user": user},
                )
            )
    return alerts


def budget_probing(events: Sequence[Indexed], th: DataThresholds) -> list[Alert]:
    """Several accounts exhausting a privacy budget from one address (or client)."""
    refused = [
        (i, e)
        for i, e in events
        if e.action in ("query", "budget.change")
        and e.outcome == "denied"
        and e.detail.get("reason") == "budget"
    ]
    alerts = []
    for (address,), items in _group(refused, "address").items():
        for cluster in bursts(
            items,
            th.budget_window,
            min_count=th.budget_accounts,
            distinct=lambda e: e.user,
            min_distinct=th.budget_accounts,
        ):
            users = sorted({e.user for _, e in cluster})
            alerts.append(
                make_alert(
                    "budget-probing",
                    "high",
                    cluster,
                    f"{len(users)} accounts ({', '.join(users[:6])}) from {address} ran out of "
                    "privacy budget within a day: one analyst spreading queries over "
                    "accounts to spend more budget than allowed.",
                    {"address": address},
                )
            )
    return alerts


def audit_tampering(events: Sequence[Indexed], th: DataThresholds) -> list[Alert]:
    """An audit log that failed verification or a cross-check."""
    alerts = []
    for i, e in events:
        if e.action == "audit.verify" and e.outcome == "failure":
            where = e.detail.get("first_bad")
            alerts.append(
                make_alert(
                    "audit-tampering",
                    "critical",
                    [(i, e)],
                    f"the audit log {e.entity or ''} failed verification"
                    + (f" at entry {where}" if where is not None else "")
                    + ": entries were altered, removed or reordered.",
                    {"node": e.entity},
                )
            )
    return alerts


def mpc_aborts(events: Sequence[Indexed], th: DataThresholds) -> list[Alert]:
    """One custodian aborting many MPC jobs in a short period."""
    aborts = [(i, e) for i, e in events if e.action == "mpc.abort"]
    alerts = []
    for (node,), items in _group(aborts, "source").items():
        for cluster in bursts(items, th.abort_window, min_count=th.abort_count):
            alerts.append(
                make_alert(
                    "mpc-abort",
                    "medium",
                    cluster,
                    f"custodian {node} aborted {len(cluster)} MPC jobs within "
                    f"{th.abort_window.total_seconds() / 3600:.0f} hours: it may be "
                    "sabotaging or probing secure computations.",
                    {"node": node},
                )
            )
    return alerts

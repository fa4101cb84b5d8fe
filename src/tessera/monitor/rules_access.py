"""Rules over logins and access refusals.

Event conventions (see docs/monitor.md): logins are ``action="login"`` with outcome
success/failure, the user, the client ``address`` and, where the gateway geolocates the
address, ``detail["lat"]``/``detail["lon"]``; refusals are any event with outcome
``denied`` (403) or ``not_found`` (404).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from tessera.monitor.alerts import Alert, Indexed, bursts, make_alert, when

__all__ = [
    "AccessThresholds",
    "brute_force",
    "enumeration",
    "impossible_travel",
    "off_hours_logins",
    "password_spraying",
]


@dataclass(frozen=True)
class AccessThresholds:
    """Tunable thresholds of the access rules (defaults tuned on bench/monitor.py)."""

    spray_window: timedelta = timedelta(hours=1)
    spray_users: int = 8
    brute_window: timedelta = timedelta(minutes=30)
    brute_failures: int = 10
    enum_window: timedelta = timedelta(minutes=10)
    enum_refusals: int = 12
    enum_entities: int = 10
    offhours_history: int = 5
    offhours_margin_hours: int = 3
    travel_speed_kmh: float = 1000.0
    travel_min_km: float = 500.0


def _by(items: Sequence[Indexed], key: str) -> dict[str, list[Indexed]]:
    groups: dict[str, list[Indexed]] = defaultdict(list)
    for item in items:
        groups[getattr(item[1], key)].append(item)
    return groups


def _failed_logins(events: Sequence[Indexed]) -> list[Indexed]:
    return [(i, e) for i, e in events if e.action == "login" and e.outcome == "failure"]


def password_spraying(events: Sequence[Indexed], th: AccessThresholds) -> list[Alert]:
    """Failed logins for many different accounts from one address in a short window."""
    alerts = []
    for address, items in _by(_failed_logins(events), "address").items():
        for cluster in bursts(
            items,
            th.spray_window,
            min_count=th.spray_users,
            distinct=lambda e: e.user,
            min_distinct=th.spray_users,
        ):
            users = {e.user for _, e in cluster}
            alerts.append(
                make_alert(
                    "password-spraying",
                    "high",
                    cluster,
                    f"{len(cluster)} failed logins for {len(users)} different accounts from "
                    f"{address or 'an unknown address'} within "
                    f"{th.spray_window.total_seconds() / 60:.0f} minutes: one password tried "
                    "against many accounts.",
                    {"address": address},
                )
            )
    return alerts


def brute_force(events: Sequence[Indexed], th: AccessThresholds) -> list[Alert]:
    """Many failed logins for one account in a short window (plus a success, if any)."""
    alerts = []
    logins = _by([(i, e) for i, e in events if e.action == "login"], "user")
    for user, items in _by(_failed_logins(events), "user").items():
        for cluster in bursts(items, th.brute_window, min_count=th.brute_failures):
            end = when(cluster[-1][1])
            success = next(
                (
                    (i, e)
                    for i, e in logins[user]
                    if e.outcome == "success" and end <= when(e) <= end + th.brute_window
                ),
                None,
            )
            addresses = sorted({e.address for _, e in cluster})
            tail = " and then a successful login" if success else ""
            alerts.append(
                make_alert(
                    "brute-force",
                    "critical" if success else "high",
                    cluster + ([success] if success else []),
                    f"{len(cluster)} failed logins for account {user} within "
                    f"{th.brute_window.total_seconds() / 60:.0f} minutes from "
                    f"{', '.join(addresses)}{tail}: password guessing.",
                    {"user": user, "address": addresses[0]},
                )
            )
    return alerts


def enumeration(events: Sequence[Indexed], th: AccessThresholds) -> list[Alert]:
    """Bursts of 403/404 answers over many different object ids by one user."""
    refused = [(i, e) for i, e in events if e.outcome in ("denied", "not_found") and e.entity]
    alerts = []
    for user, items in _by(refused, "user").items():
        for cluster in bursts(
            items,
            th.enum_window,
            min_count=th.enum_refusals,
            distinct=lambda e: e.entity,
            min_distinct=th.enum_entities,
        ):
            entities = {e.entity for _, e in cluster}
            alerts.append(
                make_alert(
                    "enumeration",
                    "medium",
                    cluster,
                    f"{len(cluster)} refused or not-found requests for {len(entities)} "
                    f"different ids by {user or 'an anonymous client'}: guessing object ids.",
                    {"user": user, "address": cluster[0][1].address},
                )
            )
    return alerts


def _circular_distance(a: int, b: int) -> int:
    d = abs(a - b) % 24
    return min(d, 24 - d)


def off_hours_logins(events: Sequence[Indexed], th: AccessThresholds) -> list[Alert]:
    """Successful logins at an hour the user has never worked near, given enough history."""
    alerts = []
    ok = [(i, e) for i, e in events if e.action == "login" and e.outcome == "success"]
    for user, items in _by(ok, "user").items():
        hours: list[int] = []
        for i, e in items:
            h = when(e).hour
            if len(hours) >= th.offhours_history and all(
                _circular_distance(h, past) > th.offhours_margin_hours for past in hours
            ):
                usual = sorted(set(hours))
                alerts.append(
                    make_alert(
                        "off-hours-login",
                        "medium",
                        [(i, e)],
                        f"{user} logged in at {when(e):%H:%M} UTC; their previous "
                        f"{len(hours)} logins were all between {usual[0]:02d}h and "
                        f"{usual[-1]:02d}h (none within {th.offhours_margin_hours} hours).",
                        {"user": user, "address": e.address},
                    )
                )
                continue  # an odd login does not become part of the baseline
            hours.append(h)
    return alerts


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(a)))


def impossible_travel(events: Sequence[Indexed], th: AccessThresholds) -> list[Alert]:
    """Consecutive logins of one user from places too far apart for the time between."""
    alerts = []
    located = [
        (i, e)
        for i, e in events
        if e.action == "login"
        and e.outcome == "success"
        and "lat" in e.detail
        and "lon" in e.detail
    ]
    for user, items in _by(located, "user").items():
        for (i0, e0), (i1, e1) in itertools.pairwise(items):
            km = _km(
                float(e0.detail["lat"]),
                float(e0.detail["lon"]),
                float(e1.detail["lat"]),
                float(e1.detail["lon"]),
            )
            hours = max((when(e1) - when(e0)).total_seconds() / 3600, 1 / 60)
            if km >= th.travel_min_km and km / hours > th.travel_speed_kmh:
                alerts.append(
                    make_alert(
                        "impossible-travel",
                        "high",
                        [(i0, e0), (i1, e1)],
                        f"{user} logged in from {e0.address} and then {e1.address}, "
                        f"{km:.0f} km apart, {hours * 60:.0f} minutes later "
                        f"({km / hours:.0f} km/h).",
                        {"user": user, "address": e1.address},
                    )
                )
    return alerts

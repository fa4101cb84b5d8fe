"""Synthetic audit traces: normal use by a population of users, with attacks injected.

Used by ``bench/monitor.py`` (precision and recall per scenario), by the tests and by
``tessera monitor simulate`` (the demo).  Randomness comes from a ``numpy`` Generator the
caller passes in (seeded: a trace is reproducible); nothing here is security-relevant.

The normal population: clinicians (logins at their shift, vault gets with k fragment
fetches under a job id, the odd 404, an occasional trip to another city), researchers
(aggregate queries with cohorts of 20..20,000 rows, a few small cells, the rare budget
refusal), administrators (policy changes), custodian nodes (rare MPC aborts) and a daily
audit verification.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from tessera.core.audit_sink import AuditEvent, DetailValue

__all__ = ["SCENARIOS", "Trace", "User", "build_trace", "inject", "population"]

CITIES = [
    ("Amsterdam", 52.37, 4.90),
    ("Berlin", 52.52, 13.40),
    ("Madrid", 40.42, -3.70),
    ("Rome", 41.90, 12.50),
    ("Paris", 48.86, 2.35),
    ("Vienna", 48.21, 16.37),
    ("Lisbon", 38.72, -9.14),
    ("Warsaw", 52.23, 21.01),
]
FAR_CITIES = [
    ("New York", 40.71, -74.0),
    ("Singapore", 1.35, 103.82),
    ("Sao Paulo", -23.55, -46.63),
]
NODES = 5
K = 3

SCENARIOS = (
    "password-spraying",
    "brute-force",
    "share-harvesting",
    "fragment-tampering",
    "bulk-export",
    "off-hours-login",
    "impossible-travel",
    "enumeration",
    "differencing",
    "small-cell-probing",
    "budget-probing",
    "audit-tampering",
    "mpc-abort",
)


@dataclass(frozen=True)
class User:
    """One member of the synthetic population."""

    name: str
    role: str
    shift: int  # UTC hour the working day starts
    city: int
    address: str
    rate: float  # exports (clinicians) or queries (researchers) per working day


@dataclass
class Trace:
    """Events in time order, and for each injected attack the indexes of its events."""

    events: list[AuditEvent] = field(default_factory=list)
    instances: list[tuple[str, list[int]]] = field(default_factory=list)


def population(rng: np.random.Generator, users: int) -> list[User]:
    """``users`` people: ~45% clinicians, ~45% researchers, the rest administrators."""
    out = []
    for i in range(users):
        role = "clinician" if i % 20 < 9 else "researcher" if i % 20 < 18 else "admin"
        night = role == "clinician" and rng.random() < 0.25
        shift = int(rng.integers(19, 22) if night else rng.integers(7, 10))
        rate = float(rng.uniform(2, 15) if role == "clinician" else rng.uniform(3, 12))
        out.append(
            User(
                f"user{i:03d}",
                role,
                shift,
                int(rng.integers(len(CITIES))),
                f"10.{i // 250}.{i % 250}.{int(rng.integers(2, 250))}",
                rate,
            )
        )
    return out


def _at(day0: datetime, hours: float) -> datetime:
    return day0 + timedelta(seconds=round(hours * 3600))


def _hex(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(0, 2**63)):016x}"


def _login(
    user: User,
    when: datetime,
    rng: np.random.Generator,
    *,
    ok: bool = True,
    city: tuple[str, float, float] | None = None,
    address: str | None = None,
) -> AuditEvent:
    _, lat, lon = city or CITIES[user.city]
    detail: dict[str, DetailValue] = {
        "lat": round(lat + float(rng.normal(0, 0.03)), 4),
        "lon": round(lon + float(rng.normal(0, 0.03)), 4),
    }
    return AuditEvent(
        "login",
        outcome="success" if ok else "failure",
        user=user.name,
        role=user.role,
        address=address or user.address,
        client="tessera-web",
        source="gateway",
        recorded=when,
        detail=detail if ok else {},
    )


def _get(user: User, when: datetime, rng: np.random.Generator, obj: str) -> list[AuditEvent]:
    job = "job-" + _hex(rng)
    events = [
        AuditEvent(
            "vault.get",
            user=user.name,
            role=user.role,
            address=user.address,
            source="gateway",
            entity=obj,
            entity_type="object",
            purpose="TREAT",
            recorded=when,
            detail={"job": job, "bytes": int(rng.integers(100_000, 50_000_000))},
        )
    ]
    for node in rng.choice(NODES, size=K, replace=False):
        events.append(
            AuditEvent(
                "fragment.fetch",
                user=user.name,
                source=f"node-{int(node) + 1}",
                entity=obj,
                entity_type="fragment",
                recorded=when + timedelta(seconds=int(rng.integers(1, 5))),
                detail={"job": job},
            )
        )
    return events


def _query(
    user: User,
    when: datetime,
    rng: np.random.Generator,
    rows: int,
    *,
    table: str = "cohort",
    outcome: str = "success",
    reason: str = "",
) -> AuditEvent:
    detail: dict[str, DetailValue] = {"query_hash": _hex(rng), "aggregate": True}
    if outcome == "success":
        detail["rows"] = rows
    if reason:
        detail["reason"] = reason
    return AuditEvent(
        "query",
        outcome=outcome,
        user=user.name,
        role=user.role,
        address=user.address,
        source="gateway",
        entity=table,
        entity_type="table",
        purpose="HRESCH",
        recorded=when,
        detail=detail,
    )


def _normal_day(
    user: User, day0: datetime, rng: np.random.Generator, out: list[AuditEvent]
) -> None:
    weekend = day0.weekday() >= 5
    if weekend and rng.random() < 0.7:
        return
    city = CITIES[int(rng.integers(len(CITIES)))] if rng.random() < 0.01 else None
    for _ in range(int(rng.integers(1, 3))):
        t = _at(day0, user.shift + float(np.clip(rng.normal(0.5, 0.8), -1.5, 2.0)))
        if rng.random() < 0.05:
            for j in range(int(rng.integers(1, 3))):
                out.append(_login(user, t - timedelta(seconds=30 * (j + 1)), rng, ok=False))
        out.append(_login(user, t, rng, city=city))
    span = 9.0
    if user.role == "clinician":
        for _ in range(int(rng.poisson(user.rate))):
            t = _at(day0, user.shift + float(rng.uniform(0.5, span)))
            if rng.random() < 0.02:
                out.append(
                    AuditEvent(
                        "vault.get",
                        outcome="not_found",
                        user=user.name,
                        address=user.address,
                        source="gateway",
                        entity=f"obj-{int(rng.integers(10**6))}",
                        entity_type="object",
                        recorded=t,
                    )
                )
            else:
                out.extend(_get(user, t, rng, f"obj-{int(rng.integers(5000))}"))
    elif user.role == "researcher":
        for _ in range(int(rng.poisson(user.rate))):
            t = _at(day0, user.shift + float(rng.uniform(0.5, span)))
            r = rng.random()
            if r < 0.002:
                out.append(_query(user, t, rng, 0, outcome="denied", reason="budget"))
            elif r < 0.012:
                out.append(_query(user, t, rng, int(rng.integers(1, 10))))
            else:
                out.append(
                    _query(user, t, rng, int(np.exp(rng.uniform(np.log(20), np.log(20000)))))
                )
    elif rng.random() < 0.3:
        out.append(
            AuditEvent(
                "policy.change",
                user=user.name,
                role="admin",
                address=user.address,
                source="gateway",
                entity="policy-default",
                entity_type="policy",
                recorded=_at(day0, user.shift + 2),
            )
        )


def _background(day0: datetime, rng: np.random.Generator, out: list[AuditEvent]) -> None:
    out.append(
        AuditEvent(
            "audit.verify",
            user="tessera",
            source="gateway",
            entity="gateway",
            entity_type="log",
            recorded=_at(day0, 2.0),
            detail={"entries": 0},
        )
    )
    for node in range(1, NODES + 1):
        if rng.random() < 0.05:
            out.append(
                AuditEvent(
                    "mpc.abort",
                    outcome="failure",
                    source=f"node-{node}",
                    entity="job-" + _hex(rng),
                    entity_type="job",
                    recorded=_at(day0, float(rng.uniform(0, 24))),
                )
            )


# -- attacks ------------------------------------------------------------------------------

Injector = Callable[[np.random.Generator, datetime, list[User]], list[AuditEvent]]


def _pick(rng: np.random.Generator, users: list[User], role: str | None = None) -> User:
    pool = [u for u in users if role is None or u.role == role]
    return pool[int(rng.integers(len(pool)))]


def _attacker_address(rng: np.random.Generator) -> str:
    return f"203.0.113.{int(rng.integers(1, 255))}"


def _spraying(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    address = _attacker_address(rng)
    victims = rng.choice(len(users), size=min(len(users), int(rng.integers(15, 40))), replace=False)
    out = []
    for v in victims:
        t += timedelta(seconds=int(rng.integers(10, 90)))
        out.append(
            AuditEvent(
                "login",
                outcome="failure",
                user=users[int(v)].name,
                address=address,
                client="python-requests",
                source="gateway",
                recorded=t,
            )
        )
    return out


def _brute(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    victim = _pick(rng, users)
    t = t.replace(hour=0, minute=0, second=0) + timedelta(
        hours=victim.shift + float(rng.uniform(0, 4))
    )
    address = _attacker_address(rng)
    out = []
    for _ in range(int(rng.integers(12, 40))):
        t += timedelta(seconds=int(rng.integers(5, 40)))
        out.append(
            AuditEvent(
                "login",
                outcome="failure",
                user=victim.name,
                address=address,
                client="hydra",
                source="gateway",
                recorded=t,
            )
        )
    if rng.random() < 0.5:
        out.append(
            AuditEvent(
                "login",
                user=victim.name,
                address=address,
                client="hydra",
                source="gateway",
                recorded=t + timedelta(seconds=20),
            )
        )
    return out


def _harvest(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    insider = _pick(rng, users, "clinician")
    obj = f"obj-{int(rng.integers(5000))}"
    nodes = rng.choice(NODES, size=int(rng.integers(K, NODES + 1)), replace=False)
    out = []
    for node in nodes:
        t += timedelta(minutes=float(rng.uniform(1, 30)))
        out.append(
            AuditEvent(
                "fragment.fetch",
                user=insider.name,
                address=insider.address,
                source=f"node-{int(node) + 1}",
                entity=obj,
                entity_type="fragment",
                recorded=t,
            )
        )
    return out


def _tamper(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    node = f"node-{int(rng.integers(1, NODES + 1))}"
    out = []
    for _ in range(int(rng.integers(1, 6))):
        t += timedelta(minutes=float(rng.uniform(0, 20)))
        out.append(
            AuditEvent(
                "fragment.verify",
                outcome="failure",
                user="tessera",
                source=node,
                entity=f"obj-{int(rng.integers(5000))}",
                entity_type="fragment",
                recorded=t,
                detail={"reason": "integrity"},
            )
        )
    return out


def _bulk(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    user = _pick(rng, users, "clinician")
    day0 = t.replace(hour=0, minute=0, second=0)
    count = int(3 * user.rate + 30 + rng.integers(0, 150))
    return [
        AuditEvent(
            "vault.get",
            user=user.name,
            role=user.role,
            address=user.address,
            source="gateway",
            entity=f"obj-{int(rng.integers(5000))}",
            entity_type="object",
            recorded=_at(day0, user.shift + float(rng.uniform(0, 9))),
            detail={"job": "job-" + _hex(rng), "bytes": int(rng.integers(100_000, 50_000_000))},
        )
        for _ in range(count)
    ]


def _offhours(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    user = _pick(rng, users)
    day0 = t.replace(hour=0, minute=0, second=0)
    when = _at(day0, (user.shift + 12 + float(rng.uniform(-1, 1))) % 24)
    return [_login(user, when, rng)]


def _travel(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    user = _pick(rng, users)
    day0 = t.replace(hour=0, minute=0, second=0)
    first = _at(day0, user.shift + 0.2)
    far = FAR_CITIES[int(rng.integers(len(FAR_CITIES)))]
    second = first + timedelta(minutes=float(rng.uniform(20, 180)))
    return [
        _login(user, first, rng),
        _login(user, second, rng, city=far, address=f"198.51.100.{int(rng.integers(1, 255))}"),
    ]


def _enumerate(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    user = _pick(rng, users)
    out = []
    for _ in range(int(rng.integers(15, 40))):
        t += timedelta(seconds=float(rng.uniform(2, 15)))
        out.append(
            AuditEvent(
                "vault.get",
                outcome="not_found" if rng.random() < 0.7 else "denied",
                user=user.name,
                address=user.address,
                source="gateway",
                entity=f"obj-{int(rng.integers(10**6))}",
                entity_type="object",
                recorded=t,
            )
        )
    return out


def _differencing(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    user = _pick(rng, users, "researcher")
    base = int(rng.integers(30, 3000))
    out = [_query(user, t, rng, base)]
    for _ in range(int(rng.integers(4, 8))):
        t += timedelta(minutes=float(rng.uniform(2, 25)))
        delta = int(rng.integers(1, 4)) * (1 if rng.random() < 0.5 else -1)
        out.append(_query(user, t, rng, base + delta))
    return out


def _smallcell(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    user = _pick(rng, users, "researcher")
    out = []
    for _ in range(int(rng.integers(5, 10))):
        t += timedelta(minutes=float(rng.uniform(1, 30)))
        if rng.random() < 0.5:
            out.append(_query(user, t, rng, 0, outcome="denied", reason="small-cell"))
        else:
            out.append(_query(user, t, rng, int(rng.integers(1, 10))))
    return out


def _budget(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    address = _attacker_address(rng)
    out = []
    for a in range(int(rng.integers(3, 7))):
        account = User(f"guest{int(rng.integers(10**4)):04d}{a}", "researcher", 9, 0, address, 0)
        for _ in range(int(rng.integers(2, 5))):
            t += timedelta(minutes=float(rng.uniform(1, 10)))
            out.append(_query(account, t, rng, int(rng.integers(100, 5000)), table="registry"))
        t += timedelta(minutes=float(rng.uniform(1, 10)))
        out.append(_query(account, t, rng, 0, table="registry", outcome="denied", reason="budget"))
    return out


def _audit(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    node = f"node-{int(rng.integers(1, NODES + 1))}"
    return [
        AuditEvent(
            "audit.verify",
            outcome="failure",
            user="tessera",
            source="gateway",
            entity=node,
            entity_type="log",
            recorded=t,
            detail={
                "entries": int(rng.integers(1000, 9000)),
                "first_bad": int(rng.integers(0, 1000)),
            },
        )
    ]


def _aborts(rng: np.random.Generator, t: datetime, users: list[User]) -> list[AuditEvent]:
    node = f"node-{int(rng.integers(1, NODES + 1))}"
    out = []
    for _ in range(int(rng.integers(5, 10))):
        t += timedelta(hours=float(rng.uniform(0.5, 5)))
        out.append(
            AuditEvent(
                "mpc.abort",
                outcome="failure",
                source=node,
                entity="job-" + _hex(rng),
                entity_type="job",
                recorded=t,
            )
        )
    return out


INJECTORS: dict[str, Injector] = {
    "password-spraying": _spraying,
    "brute-force": _brute,
    "share-harvesting": _harvest,
    "fragment-tampering": _tamper,
    "bulk-export": _bulk,
    "off-hours-login": _offhours,
    "impossible-travel": _travel,
    "enumeration": _enumerate,
    "differencing": _differencing,
    "small-cell-probing": _smallcell,
    "budget-probing": _budget,
    "audit-tampering": _audit,
    "mpc-abort": _aborts,
}


def inject(
    scenario: str, rng: np.random.Generator, when: datetime, users: list[User]
) -> list[AuditEvent]:
    """The events of one ``scenario`` attack starting around ``when``."""
    try:
        injector = INJECTORS[scenario]
    except KeyError:
        raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}") from None
    return injector(rng, when, users)


def build_trace(
    rng: np.random.Generator,
    *,
    days: int = 30,
    users: int = 200,
    per_scenario: int = 20,
    start: datetime = datetime(2026, 3, 2, tzinfo=UTC),
    scenarios: tuple[str, ...] = SCENARIOS,
) -> Trace:
    """``days`` of normal use by ``users`` people with ``per_scenario`` of each attack.

    Attacks start after the first week so the per-user baselines exist.
    """
    people = population(rng, users)
    tagged: list[tuple[datetime, int, AuditEvent]] = []
    normal: list[AuditEvent] = []
    for d in range(days):
        day0 = start + timedelta(days=d)
        _background(day0, rng, normal)
        for user in people:
            _normal_day(user, day0, rng, normal)
    tagged.extend((e.recorded or start, -1, e) for e in normal)
    first = min(7, max(days - 1, 0))
    for s, scenario in enumerate(scenarios):
        for n in range(per_scenario):
            when = start + timedelta(days=float(rng.uniform(first, days - 0.5)))
            instance = s * per_scenario + n
            tagged.extend(
                (e.recorded or when, instance, e) for e in inject(scenario, rng, when, people)
            )
    tagged.sort(key=lambda x: x[0])
    trace = Trace()
    members: dict[int, list[int]] = {}
    for index, (_, instance, event) in enumerate(tagged):
        trace.events.append(event)
        if instance >= 0:
            members.setdefault(instance, []).append(index)
    for s, scenario in enumerate(scenarios):
        for n in range(per_scenario):
            trace.instances.append((scenario, members.get(s * per_scenario + n, [])))
    return trace

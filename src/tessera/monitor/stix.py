"""STIX 2.1 export of alerts (built with ``stix2``, checked with ``stix2-validator``).

For every alert the bundle holds: an ``indicator`` (STIX pattern on the attacker's
address, or on a pseudonymised account / the custodian), the ``attack-pattern`` with its
MITRE ATT&CK id, ``observed-data`` over the cyber observables, a ``sighting`` of the
indicator by our ``identity``, an ``incident`` carrying the plain explanation, and
``related-to``/``indicates`` relationships — all marked TLP (amber by default).

Account names never leave the organisation: user ids in subjects and explanations become
``acct-<12 hex>`` pseudonyms (SHA-256 of the name under a per-export salt the caller
controls, so partners can correlate within one feed but not reverse it).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Sequence
from typing import Any

import stix2

from tessera.errors import InputError
from tessera.monitor.alerts import KINDS, Alert

__all__ = ["TLP", "pseudonym", "to_stix", "validate_stix"]

TLP = {
    "white": stix2.TLP_WHITE,
    "green": stix2.TLP_GREEN,
    "amber": stix2.TLP_AMBER,
    "red": stix2.TLP_RED,
}


def pseudonym(user: str, salt: str) -> str:
    """A stable, non-reversible stand-in for an account name."""
    return "acct-" + hashlib.sha256(f"{salt}\x00{user}".encode()).hexdigest()[:12]


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _observables(alert: Alert, salt: str) -> tuple[str, list[Any]]:
    """A STIX pattern for the alert and the cyber observables behind it."""
    address = alert.subject.get("address", "")
    user = alert.subject.get("user", "")
    node = alert.subject.get("node", "")
    if address and _is_ip(address):
        kind = "ipv6-addr" if ":" in address else "ipv4-addr"
        sco = (stix2.IPv6Address if kind == "ipv6-addr" else stix2.IPv4Address)(value=address)
        return f"[{kind}:value = '{_escape(address)}']", [sco]
    name = pseudonym(user, salt) if user else node or "unknown"
    sco = stix2.UserAccount(user_id=name, account_login=name)
    return f"[user-account:user_id = '{_escape(name)}']", [sco]


def _redact(alert: Alert, salt: str) -> str:
    text = alert.explanation
    user = alert.subject.get("user", "")
    if user:
        text = text.replace(user, pseudonym(user, salt))
    return text


def to_stix(
    alerts: Sequence[Alert],
    *,
    organisation: str = "Tessera trusted data environment",
    tlp: str = "amber",
    salt: str = "tessera",
) -> dict[str, Any]:
    """A STIX 2.1 bundle (as a JSON-ready dict) describing ``alerts``."""
    if tlp not in TLP:
        raise InputError(f"unknown TLP level {tlp!r}; one of {', '.join(TLP)}")
    marking = TLP[tlp]
    identity = stix2.Identity(
        name=organisation,
        identity_class="organization",
        sectors=["healthcare"],
        object_marking_refs=[marking],
    )
    objects: list[Any] = [identity]
    patterns: dict[str, Any] = {}
    for alert in alerts:
        title, technique, technique_name = KINDS[alert.kind]
        common = {"created_by_ref": identity.id, "object_marking_refs": [marking]}
        explanation = _redact(alert, salt)
        pattern, scos = _observables(alert, salt)
        indicator = stix2.Indicator(
            name=title,
            description=explanation,
            pattern=pattern,
            pattern_type="stix",
            valid_from=alert.first_seen,
            indicator_types=[
                "anomalous-activity" if alert.kind == "anomaly" else "malicious-activity"
            ],
            labels=[alert.kind, f"severity:{alert.severity}"],
            **common,
        )
        observed = stix2.ObservedData(
            first_observed=alert.first_seen,
            last_observed=alert.last_seen,
            number_observed=max(1, len(alert.event_ids)),
            object_refs=[s.id for s in scos],
            **common,
        )
        sighting = stix2.Sighting(
            sighting_of_ref=indicator.id,
            observed_data_refs=[observed.id],
            where_sighted_refs=[identity.id],
            first_seen=alert.first_seen,
            last_seen=alert.last_seen,
            count=max(1, len(alert.event_ids)),
            **common,
        )
        incident = stix2.Incident(
            name=f"{title} ({alert.severity})",
            description=explanation,
            labels=[alert.kind, f"severity:{alert.severity}"],
            **common,
        )
        objects += [*scos, indicator, observed, sighting, incident]
        objects.append(stix2.Relationship(incident.id, "related-to", indicator.id, **common))
        if technique:
            if technique not in patterns:
                patterns[technique] = stix2.AttackPattern(
                    name=technique_name,
                    external_references=[
                        {
                            "source_name": "mitre-attack",
                            "external_id": technique,
                            "url": "https://attack.mitre.org/techniques/"
                            + technique.replace(".", "/"),
                        }
                    ],
                    **common,
                )
                objects.append(patterns[technique])
            objects.append(
                stix2.Relationship(indicator.id, "indicates", patterns[technique].id, **common)
            )
    bundle = stix2.Bundle(objects=objects, allow_custom=False)
    result: dict[str, Any] = json.loads(bundle.serialize())
    return result


# What stix2-validator's checks raise on objects of the wrong shape (it assumes, e.g.,
# that an ``id`` is a string) instead of reporting them.
_VALIDATOR_CRASHES = (
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    RecursionError,
)


# The STIX 2.1 schemas check ``type`` values and ``extensions`` keys with
# ``^([a-z][a-z0-9]*)+(-[a-z0-9]+)*...$``, which backtracks exponentially on a long
# near-miss ("aaaa...a@"): such strings are refused here first, with the same language.
_TYPE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*-?")
_EXTENSION = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*-ext")


def _check_names(bundle: Any) -> None:
    """InputError if a ``type`` or an ``extensions`` key anywhere in ``bundle`` is not a
    STIX name (checked before the validator's regular expressions see it)."""
    stack = [bundle]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and not (len(kind) <= 250 and _TYPE.fullmatch(kind)):
                raise InputError(f"STIX validation failed: invalid type {kind[:40]!r}")
            extensions = node.get("extensions")
            if isinstance(extensions, dict):
                for key in extensions:
                    if not (_EXTENSION.fullmatch(key) or key.startswith("extension-definition--")):
                        raise InputError(f"STIX validation failed: invalid extension {key[:40]!r}")
            stack.extend(node.values())


def validate_stix(bundle: dict[str, Any]) -> None:
    """Raise InputError unless stix2-validator accepts ``bundle`` as STIX 2.1."""
    _check_names(bundle)
    # imported here: stix2-validator loads jsonschema's format checkers (a second or
    # more), which every other monitor command does without
    from stix2validator import ValidationOptions, validate_string
    from stix2validator.errors import ValidationError

    try:
        results = validate_string(json.dumps(bundle), ValidationOptions(version="2.1"))
    except ValidationError as exc:
        raise InputError(f"STIX validation failed: {str(exc)[:200]}") from None
    except _VALIDATOR_CRASHES as exc:  # stix2-validator trips over some malformed objects
        raise InputError(f"STIX validation failed: malformed ({type(exc).__name__})") from None
    if not results.is_valid:
        problems = [str(getattr(e, "message", e)) for e in results.errors]
        raise InputError("STIX validation failed: " + "; ".join(problems[:3]))

"""Push what was learnt to partners: TAXII 2.1 collections and MISP instances.

* TAXII 2.1 through ``taxii2-client``: the STIX bundle is added to one collection of an
  API root (``url`` is the API root, e.g. ``https://cti.example/api1/``).
* MISP through ``pymisp``: one MISP event per alert (threat level from the severity,
  TLP and MITRE ATT&CK galaxy tags, the attacker address as an ``ip-src`` attribute and
  the plain explanation as a ``text`` attribute), with distribution "your organisation
  only" unless asked otherwise.

Credentials are passed in by the caller (the CLI reads them from the environment), never
put in URLs or messages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tessera.errors import BackendError
from tessera.monitor.alerts import Alert
from tessera.monitor.stix import _is_ip, _redact, pseudonym

__all__ = ["SharingError", "push_misp", "push_taxii"]

_THREAT_LEVEL = {"critical": 1, "high": 1, "medium": 2, "low": 3}


class SharingError(BackendError):
    """A TAXII or MISP server refused or could not be reached."""

    code = "sharing_failed"


def push_taxii(
    bundle: dict[str, Any],
    api_root: str,
    collection_id: str,
    *,
    user: str | None = None,
    password: str | None = None,
    verify_tls: bool = True,
) -> dict[str, Any]:
    """Add the bundle's objects to a TAXII 2.1 collection; return the server's status."""
    import requests
    from taxii2client.exceptions import TAXIIServiceException
    from taxii2client.v21 import Collection

    url = api_root.rstrip("/") + f"/collections/{collection_id}/"
    try:
        collection = Collection(url, user=user, password=password, verify=verify_tls)
        status = collection.add_objects(
            json.dumps(bundle), wait_for_completion=True, poll_interval=1, timeout=30
        )
    except (TAXIIServiceException, requests.RequestException, ValueError) as exc:
        raise SharingError(f"TAXII push to {api_root} failed ({exc.__class__.__name__})") from None
    result = {
        "status": status.status,
        "total": status.total_count,
        "success": status.success_count,
        "failure": status.failure_count,
    }
    if status.failure_count:
        raise SharingError(
            f"TAXII server refused {status.failure_count} of {status.total_count} objects"
        )
    return result


def push_misp(
    alerts: Sequence[Alert],
    url: str,
    key: str,
    *,
    verify_tls: bool = True,
    distribution: int = 0,
    tlp: str = "amber",
    salt: str = "tessera",
) -> list[str]:
    """Create one MISP event per alert through pymisp; return the new events' UUIDs."""
    import requests
    from pymisp import MISPEvent, PyMISP, PyMISPError

    try:
        misp = PyMISP(url, key, ssl=verify_tls, timeout=30, tool="tessera")
    except (PyMISPError, requests.RequestException) as exc:
        raise SharingError(f"cannot reach MISP at {url} ({exc.__class__.__name__})") from None
    created = []
    for alert in alerts:
        event = MISPEvent()
        event.info = f"Tessera: {alert.title}"
        event.distribution = distribution
        event.threat_level_id = _THREAT_LEVEL[alert.severity]
        event.analysis = 2
        event.set_date(alert.first_seen.date())
        event.add_tag(f"tlp:{tlp}")
        if alert.technique:
            event.add_tag(f'misp-galaxy:mitre-attack-pattern="{alert.technique}"')
        event.add_attribute("text", _redact(alert, salt), comment="explanation")
        address = alert.subject.get("address", "")
        if address and _is_ip(address):
            event.add_attribute("ip-src", address, to_ids=True, comment=alert.kind)
        elif alert.subject.get("user"):
            event.add_attribute("text", pseudonym(alert.subject["user"], salt), comment="account")
        try:
            answer = misp.add_event(event, pythonify=False)
        except (PyMISPError, requests.RequestException) as exc:
            raise SharingError(f"MISP refused the event ({exc.__class__.__name__})") from None
        if not isinstance(answer, dict) or "errors" in answer or "Event" not in answer:
            raise SharingError("MISP refused the event")
        created.append(str(answer["Event"].get("uuid", "")))
    return created

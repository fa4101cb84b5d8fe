"""Push alerts to MISP through pymisp, against a tiny MISP-compatible server on loopback.

No MISP server can be installed here, so this server implements the few REST endpoints
pymisp calls (version checks, the current user, describeTypes, events/add) and checks the
API key, like MISP does.  What MISP would do with the event afterwards is not tested.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pymisp
import pytest

from tessera.core.audit_sink import AuditEvent
from tessera.monitor import SharingError, push_misp, scan
from tessera.monitor.scan import MonitorSettings

pytestmark = pytest.mark.integration

KEY = "k" * 40
T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


class _Misp(BaseHTTPRequestHandler):
    events: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != KEY:
            self._send(
                403, {"name": "Authentication failed.", "message": "Forbidden", "url": self.path}
            )
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path.endswith("servers/getPyMISPVersion.json"):
            self._send(200, {"version": pymisp.__version__})
        elif self.path.endswith("servers/getVersion"):
            self._send(200, {"version": "2.5.0", "perm_sync": False})
        elif self.path.endswith("users/view/me"):
            self._send(
                200,
                {
                    "User": {
                        "id": "1",
                        "email": "analyst@example.org",
                        "org_id": "1",
                        "role_id": "3",
                    },
                    "Role": {"id": "3", "name": "User", "perm_add": True},
                    "UserSetting": {},
                },
            )
        else:
            self._send(404, {"name": "Not Found", "message": "Not Found", "url": self.path})

    def do_POST(self) -> None:
        if not self._authorised():
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        if self.path.endswith("events/add"):
            event = body.get("Event", body)
            event["id"] = str(len(self.events) + 1)
            event["uuid"] = event.get("uuid") or f"00000000-0000-4000-8000-{len(self.events):012d}"
            self.events.append(event)
            self._send(200, {"Event": event})
        else:
            self._send(404, {"name": "Not Found", "message": "Not Found", "url": self.path})


@pytest.fixture
def misp_url() -> Iterator[str]:
    _Misp.events = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Misp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _alerts() -> list[Any]:
    spray = [
        (
            i,
            AuditEvent(
                "login",
                outcome="failure",
                user=f"u{i}",
                address="203.0.113.77",
                recorded=T0 + timedelta(seconds=20 * i),
            ),
        )
        for i in range(10)
    ]
    brute = [
        (
            100 + i,
            AuditEvent(
                "login",
                outcome="failure",
                user="alice",
                address="198.51.100.4",
                recorded=T0 + timedelta(hours=2, seconds=10 * i),
            ),
        )
        for i in range(12)
    ]
    return scan(spray + brute, MonitorSettings(anomaly=None))


def test_push_creates_one_event_per_alert(misp_url: str) -> None:
    alerts = _alerts()
    assert {a.kind for a in alerts} == {"password-spraying", "brute-force"}
    uuids = push_misp(alerts, misp_url, KEY, verify_tls=False)
    assert len(uuids) == len(alerts) == len(_Misp.events)
    spray = next(e for e in _Misp.events if "spraying" in e["info"])
    tags = {t["name"] for t in spray["Tag"]}
    assert "tlp:amber" in tags
    assert 'misp-galaxy:mitre-attack-pattern="T1110.003"' in tags
    attrs = {(a["type"], a["value"]) for a in spray["Attribute"]}
    assert ("ip-src", "203.0.113.77") in attrs
    assert spray["distribution"] in (0, "0") and spray["threat_level_id"] in (1, "1")
    assert "alice" not in json.dumps(_Misp.events)


def test_bad_key_is_a_sharing_error(misp_url: str) -> None:
    with pytest.raises(SharingError) as info:
        push_misp(_alerts(), misp_url, "x" * 40, verify_tls=False)
    assert "x" * 40 not in str(info.value)

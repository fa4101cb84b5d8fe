"""Push a STIX bundle to a real TAXII 2.1 server (medallion, memory backend) on loopback."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

pytestmark = pytest.mark.integration

medallion = pytest.importorskip("medallion")
from taxii2client.v21 import Collection  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from tessera.core.audit_sink import AuditEvent  # noqa: E402
from tessera.monitor import SharingError, push_taxii, scan, to_stix  # noqa: E402
from tessera.monitor.scan import MonitorSettings  # noqa: E402

COLLECTION = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


def _server_data() -> dict[str, object]:
    return {
        "/discovery": {
            "title": "Tessera test TAXII server",
            "default": "http://127.0.0.1/api1/",
            "api_roots": ["http://127.0.0.1/api1/"],
        },
        "api1": {
            "information": {
                "title": "api1",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 10_000_000,
            },
            "status": [],
            "collections": [
                {
                    "id": COLLECTION,
                    "title": "health-sector alerts",
                    "can_read": True,
                    "can_write": True,
                    "media_types": ["application/stix+json;version=2.1"],
                    "objects": [],
                    "manifest": [],
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def taxii_root() -> Iterator[str]:
    app = medallion.application_instance
    config = {
        "users": {"analyst": "s3cret-test-only"},
        "taxii": {"max_page_size": 100},
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": io.StringIO(json.dumps(_server_data())),
        },
    }
    medallion.set_config(app, "users", config)
    medallion.set_config(app, "taxii", config)
    medallion.set_config(app, "backend", config)
    if "objects" not in app.blueprints:
        medallion.register_blueprints(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api1/"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _spray() -> list[tuple[int, AuditEvent]]:
    return [
        (
            i,
            AuditEvent(
                "login",
                outcome="failure",
                user=f"u{i}",
                address="203.0.113.50",
                recorded=T0 + timedelta(seconds=20 * i),
            ),
        )
        for i in range(12)
    ]


def test_push_and_read_back(taxii_root: str) -> None:
    alerts = scan(_spray(), MonitorSettings(anomaly=None))
    bundle = to_stix(alerts)
    status = push_taxii(bundle, taxii_root, COLLECTION, user="analyst", password="s3cret-test-only")
    assert status["status"] == "complete" and status["success"] == len(bundle["objects"])
    collection = Collection(
        f"{taxii_root}collections/{COLLECTION}/", user="analyst", password="s3cret-test-only"
    )
    stored = collection.get_objects()["objects"]
    indicators = [o for o in stored if o["type"] == "indicator"]
    assert indicators[0]["pattern"] == "[ipv4-addr:value = '203.0.113.50']"


def test_wrong_password_is_a_sharing_error(taxii_root: str) -> None:
    bundle = to_stix(scan(_spray(), MonitorSettings(anomaly=None)))
    with pytest.raises(SharingError) as info:
        push_taxii(bundle, taxii_root, COLLECTION, user="analyst", password="wrong")
    assert "wrong" not in str(info.value)

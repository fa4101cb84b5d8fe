"""Issue #17: every answer in one error shape with the security headers; bad epsilons
are refused at the edge (422) and audited; nothing leaks but a one-line message."""

from __future__ import annotations

import logging

import pytest

from tessera.server.guard import SECURITY_HEADERS
from tessera.workflows import audit

from .conftest import Site

BAD_EPSILONS = ["1e-17", "5e-324", "1e308", "Infinity", "-Infinity", "NaN", "0", "-1", "101"]


def _is_error(resp: object, status: int, code: str | None = None) -> dict[str, str]:
    assert resp.status_code == status, resp.text  # type: ignore[attr-defined]
    body = resp.json()  # type: ignore[attr-defined]
    assert set(body) == {"error", "message"} and "\n" not in body["message"]
    assert code is None or body["error"] == code
    for key, value in SECURITY_HEADERS.items():
        assert resp.headers[key] == value  # type: ignore[attr-defined]
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize("epsilon", BAD_EPSILONS)
def test_bad_epsilon_is_a_422_and_audited(site: Site, epsilon: str) -> None:
    client = site.client()
    before = audit.gateway_log(site.home).size
    body = '{"sql": "SELECT COUNT(*) FROM t", "epsilon": ' + epsilon + "}"
    headers = {**site.auth("researcher"), "Content-Type": "application/json"}
    resp = client.post("/api/v1/query", content=body, headers=headers)
    message = _is_error(resp, 422, "invalid_request")["message"]
    assert ("epsilon" in message and epsilon not in ("NaN", "Infinity")) or "finite" in message
    events = [ev for _, ev in audit.gateway_log(site.home).tail(5)]
    assert audit.gateway_log(site.home).size == before + 1
    mine = events[0]
    assert (mine.action, mine.outcome, mine.user) == ("query", "failure", "rita")
    assert mine.detail["error"] == "invalid_request"
    # the next request on the same client works
    assert client.get("/api/v1/me", headers=site.auth("researcher")).status_code == 200


def test_framework_errors_have_the_shape(site: Site) -> None:
    client = site.client()
    _is_error(client.get("/nowhere"), 404, "not_found")
    resp = client.delete("/api/v1/me")
    _is_error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["allow"]
    _is_error(client.post("/api/v1/query", content=b"x" * 300_000), 413, "request_too_large")
    auth = site.auth("researcher")
    _is_error(client.post("/api/v1/query", content=b"{", headers=auth), 422)
    _is_error(client.post("/api/v1/query", json={"sql": "x" * 20_001}, headers=auth), 422)
    _is_error(client.post("/api/v1/query", json={"sql": "x", "more": 1}, headers=auth), 422)
    _is_error(client.get("/api/v1/audit/events?limit=0", headers=site.auth("officer")), 422)
    _is_error(client.get("/api/v1/me"), 401, "unauthenticated")
    _is_error(client.get("/api/v1/vault", headers=auth), 403, "forbidden")


def test_the_longest_query_the_schema_allows_is_read(site: Site) -> None:
    """Found by schemathesis: 20,000 characters written as JSON escapes passed the
    schema but not the body limit (413, a status the schema did not allow there)."""
    import json

    body = json.dumps({"sql": "\U0001f600" * 20_000, "epsilon": 1e-17})  # 12 bytes a char
    headers = {**site.auth("researcher"), "Content-Type": "application/json"}
    resp = site.client().post("/api/v1/query", content=body, headers=headers)
    assert _is_error(resp, 422, "invalid_request")["message"].startswith("epsilon")


def test_unexpected_error_is_a_500_in_the_shape_with_the_trace_in_the_log(
    site: Site, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import tessera.workflows.tables as tables

    def boom(env: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(tables, "list_tables", boom)
    client = site.client()
    with caplog.at_level(logging.ERROR, logger="tessera.server"):
        resp = client.get("/api/v1/tables", headers=site.auth("researcher"))
    body = _is_error(resp, 500, "internal_error")
    assert "secret detail" not in body["message"] and "Traceback" not in resp.text
    assert "secret detail" in caplog.text  # the traceback is in the server's log
    assert client.get("/api/v1/health").status_code == 200

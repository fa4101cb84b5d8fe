"""The routes behind the console's workflow views, over a real gateway and three
custodian nodes: requests (roles, visibility, a held output reviewed and released),
the vault's health grid and the browser upload (streamed, a taken name refused), the
budgets per researcher and the audit log verified against the custodians."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_fixtures import Gateway, console_world, damage, fragment_files, running_gateway

from tessera.workflows.vault import open_vault

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("console-api")]

DP_SQL = "SELECT hospital, COUNT(*) AS n FROM gated GROUP BY hospital"
HELD_SQL = "SELECT sex, COUNT(*) AS n FROM checked GROUP BY sex"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("console-api"), console_world) as gw:
        yield gw


def _file(gw: Gateway, sql: str, role: str = "researcher", **extra: Any) -> dict[str, Any]:
    body = {"sql": sql, "purpose": "cohort description", **extra}
    resp = gw.post("api/v1/requests", role, body)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _upload(gw: Gateway, role: str, name: str, data: bytes, **params: str) -> httpx.Response:
    return httpx.post(
        gw.url + "api/v1/vault/upload",
        params={"name": name, **params},
        content=data,
        headers={**gw._auth(role), "Content-Type": "application/octet-stream"},
        timeout=120,
    )


def test_requests_are_filed_seen_and_decided_by_role(gateway: Gateway) -> None:
    filed = _file(gateway, DP_SQL, epsilon=0.5)
    rid = filed["id"]
    assert filed["state"] == "pending" and filed["researcher"] == "alice"
    assert filed["tables"] == ["gated"] and filed["epsilon"] == 0.5
    mine = gateway.get("api/v1/requests", "researcher").json()
    assert [r["id"] for r in mine] == [rid]
    # another researcher neither lists nor sees nor runs it
    assert gateway.get("api/v1/requests", "other").json() == []
    for resp in (
        gateway.get(f"api/v1/requests/{rid}", "other"),
        gateway.post(f"api/v1/requests/{rid}/run", "other", {}),
    ):
        assert resp.status_code == 404 and resp.json()["error"] == "not_found", resp.text
    # a researcher cannot approve, not even her own request; nobody files as a steward
    mine_approve = gateway.post(f"api/v1/requests/{rid}/approve", "researcher", {"reason": "ok"})
    assert mine_approve.status_code == 403 and mine_approve.json()["error"] == "forbidden"
    assert (
        gateway.post("api/v1/requests", "steward", {"sql": DP_SQL, "purpose": "x"}).status_code
        == 403
    )
    # not yet approved: the run is refused; a decision needs a reason
    assert gateway.post(f"api/v1/requests/{rid}/run", "researcher", {}).status_code == 403
    bad = gateway.post(f"api/v1/requests/{rid}/approve", "steward", {"reason": ""})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"
    # the officer is no steward of the table: refused with the reason
    officer = gateway.post(f"api/v1/requests/{rid}/approve", "officer", {"reason": "fine"})
    assert officer.status_code == 403 and "not the steward" in officer.json()["message"]
    everyone = gateway.get("api/v1/requests", "steward").json()
    assert rid in [r["id"] for r in everyone]
    approved = gateway.post(f"api/v1/requests/{rid}/approve", "steward", {"reason": "protocol 7"})
    assert approved.status_code == 200 and approved.json()["state"] == "approved"
    assert approved.json()["decisions"][-1]["by"] == "sam"
    # the researcher runs it once: a DP answer with an interval per count
    answer = gateway.post(f"api/v1/requests/{rid}/run", "researcher", {}).json()
    assert answer["columns"] == ["hospital", "n"] and len(answer["rows"]) == 3
    intervals = answer["privacy"]["columns"][1]["intervals"]
    assert all(lo <= row[1] <= hi for row, (lo, hi) in zip(answer["rows"], intervals, strict=True))
    again = gateway.post(f"api/v1/requests/{rid}/run", "researcher", {})
    assert again.status_code == 403 and "ran already" in again.json()["message"]
    assert gateway.get(f"api/v1/requests/{rid}", "researcher").json()["state"] == "done"
    assert gateway.get(f"api/v1/requests/{rid}/result", "researcher").status_code == 404
    assert gateway.get("api/v1/requests/not-an-id", "researcher").status_code == 422
    events = gateway.get("api/v1/audit/events", "officer", params={"limit": 60}).json()
    actions = {e["action"] for e in events if e["user"] in ("alice", "sam", "bob")}
    assert {"request.file", "request.decide", "request.run", "request.show"} <= actions


def test_a_held_output_is_reviewed_by_its_steward_then_released(gateway: Gateway) -> None:
    rid = _file(gateway, HELD_SQL)["id"]
    gateway.post(f"api/v1/requests/{rid}/approve", "steward", {"reason": "ok"}).raise_for_status()
    held = gateway.post(f"api/v1/requests/{rid}/run", "researcher", {}).json()
    assert held["held"] is True and held["reasons"], held
    output = held["request"]
    doc = gateway.get(f"api/v1/requests/{output}", "steward").json()
    assert doc["kind"] == "output" and doc["state"] == "held" and doc["reasons"]
    # the steward reviews the held result; the researcher does not see it yet
    review = gateway.get(f"api/v1/requests/{output}/result", "steward")
    assert review.status_code == 200, review.text
    assert review.json()["columns"] == ["sex", "n"] and review.json()["rows"]
    early = gateway.get(f"api/v1/requests/{output}/result", "researcher")
    assert early.status_code in (403, 404, 409), early.text
    assert gateway.get(f"api/v1/requests/{output}/result", "other").status_code == 404
    released = gateway.post(f"api/v1/requests/{output}/approve", "steward", {"reason": "public"})
    assert released.status_code == 200 and released.json()["state"] == "released"
    mine = gateway.get(f"api/v1/requests/{output}/result", "researcher")
    assert mine.status_code == 200 and mine.json()["rows"] == review.json()["rows"]


def test_vault_upload_streams_refuses_a_taken_name_and_the_grid_shows_damage(
    gateway: Gateway, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: over the gateway's usual body limit
    put = _upload(gateway, "steward", "scan.bin", data)
    assert put.status_code == 200, put.text
    assert put.json()["name"] == "scan.bin" and put.json()["size"] == len(data)
    again = _upload(gateway, "steward", "scan.bin", b"other")
    assert again.status_code == 409 and again.json()["error"] == "name_exists"
    for role in ("researcher", "officer"):
        assert _upload(gateway, role, "x.bin", b"x").json()["error"] == "forbidden"
    assert _upload(gateway, "steward", "bad\nname", b"x").status_code == 422
    out = tmp_path / "scan.bin"
    open_vault(gateway.env).get("scan.bin", out)
    assert out.read_bytes() == data  # as stored, before the replacement
    replaced = _upload(gateway, "steward", "scan.bin", b"second version", replace="true")
    assert replaced.status_code == 200, replaced.text
    open_vault(gateway.env).get("scan.bin", out)
    assert out.read_bytes() == b"second version"
    # the rest of the API keeps its limit
    big = {"sql": "x" * 20_000 + " " * 300_000}
    assert gateway.post("api/v1/query", "researcher", big).status_code == 413

    grid = gateway.get("api/v1/vault/verify", "steward").json()
    assert grid["status"] == "healthy" and grid["stores"] == ["1", "2", "3"]
    assert grid["objects"][0]["cells"] == {"1": "healthy", "2": "healthy", "3": "healthy"}
    (fragment,) = fragment_files(gateway.env, 2)
    damage(fragment)
    grid = gateway.get("api/v1/vault/verify", "officer").json()
    assert grid["status"] == "degraded"
    assert grid["objects"][0]["cells"] == {"1": "healthy", "2": "damaged", "3": "healthy"}
    fragment.unlink()
    cells = gateway.get("api/v1/vault/verify", "steward").json()["objects"][0]["cells"]
    assert cells["2"] == "missing"
    assert gateway.get("api/v1/vault/verify", "researcher").status_code == 403


def test_budgets_per_researcher_and_audit_verified_against_custodians(gateway: Gateway) -> None:
    rows = gateway.get("api/v1/budget/researchers", "steward").json()
    mine = [r for r in rows if r["researcher"] == "alice" and r["table"] == "gated"]
    assert mine and mine[0]["share_epsilon"] == pytest.approx(5.0, rel=1e-3)
    assert {r["researcher"] for r in rows} >= {"alice", "bob"}
    assert gateway.get("api/v1/budget/researchers", "officer").status_code == 200
    assert gateway.get("api/v1/budget/researchers", "researcher").status_code == 403
    report = gateway.get("api/v1/audit/verify", "officer").json()
    assert {"ok", "entries", "first_bad", "problem", "heads", "signed_size"} <= set(report)
    assert report["ok"] is True, report
    assert report["vouched"] == 3 and report["nodes"] == 3
    assert report["custodians"]["checked"] == [1, 2, 3]

"""The console's routes without custodians: the command each path stands for (path
templates included), the vault's health grid, the count of custodians that vouch for
the log, the larger body limit of the upload route alone, and the console's files
(served by the gateway, nothing from another origin, no markup built from data)."""

from __future__ import annotations

import re
from importlib import resources

from tessera.server.console_routes import UPLOAD_PATH, health_grid
from tessera.server.routes import CALLS, vouched

from .conftest import Site

SCRIPTS = ("console.js", "console-dom.js", "console-charts.js", "console-views.js")


def test_every_route_of_the_console_is_an_audited_command() -> None:
    assert CALLS.get("/api/v1/requests/0123abcd/approve") == CALLS["/api/v1/requests/{id}/approve"]
    assert CALLS["/api/v1/requests/{id}/refuse"].path == ("request", "decide")
    assert CALLS.get("/api/v1/requests/0123abcd").path == ("request", "show")
    assert CALLS.get("/api/v1/requests/a/b/approve") is None  # a segment is never two
    assert CALLS.get("/api/v1/nowhere") is None
    assert CALLS["/api/v1/vault/upload"].path == ("vault", "put")


def test_health_grid_names_each_store_of_each_object() -> None:
    doc = {
        "status": "degraded",
        "objects": [
            {"name": "a", "status": "healthy", "problems": []},
            {
                "name": "b",
                "status": "degraded",
                "problems": [
                    {"store": "1", "problem": "data fragment: tag mismatch"},
                    {"store": "2", "problem": "data fragment missing"},
                    {"store": "2", "problem": "catalogue fragment missing"},
                ],
            },
        ],
        "unreachable": [{"store": "3", "problem": "timed out"}],
    }
    grid = health_grid(doc, [1, 2, 3])
    assert grid["stores"] == ["1", "2", "3"]
    assert grid["objects"][0]["cells"] == {"1": "healthy", "2": "healthy", "3": "unreachable"}
    assert grid["objects"][1]["cells"] == {"1": "damaged", "2": "missing", "3": "unreachable"}
    assert grid["objects"][1]["problems"] == doc["objects"][1]["problems"]  # kept as they were


def test_custodians_that_vouch_are_those_with_nothing_against_the_log() -> None:
    assert vouched([1, 2, 3], []) == 3
    problems = ["forked: custodian 2 witnessed size 9 (root 0a1b2c3d..) but ..."]
    assert vouched([1, 2, 3], problems) == 2
    assert vouched([1, 3], ["could not reach custodian 2: refused"]) == 2
    assert vouched([], []) == 0


def test_only_the_upload_route_takes_a_large_body(site: Site) -> None:
    client = site.client()
    big = {"Content-Length": str(2 * 1024 * 1024), "Content-Type": "application/octet-stream"}
    body = b"\0" * (2 * 1024 * 1024)
    resp = client.post(UPLOAD_PATH, params={"name": "x"}, content=body, headers=big)
    assert resp.status_code == 401  # past the size check: the token is what is missing
    resp = client.post("/api/v1/query", content=body, headers=big)
    assert resp.status_code == 413 and resp.json()["error"] == "request_too_large"
    auth = {**site.auth("researcher"), "Content-Type": "application/octet-stream"}
    resp = client.post(UPLOAD_PATH, params={"name": "x"}, content=b"data", headers=auth)
    assert resp.status_code == 403 and resp.json()["error"] == "forbidden"


def test_request_routes_check_the_id_and_the_role(site: Site) -> None:
    client = site.client()
    auth = site.auth("researcher")
    bad = client.get("/api/v1/requests/not-hex", headers=auth)
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"
    rid = "0" * 32
    refused = client.post(f"/api/v1/requests/{rid}/approve", json={"reason": "x"}, headers=auth)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    officer = site.auth("officer")
    filed = client.post("/api/v1/requests", json={"purpose": "x"}, headers=officer)
    assert filed.status_code == 403  # researchers file requests
    missing = client.get(f"/api/v1/requests/{rid}", headers=officer)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert client.get("/api/v1/requests", headers=officer).json() == []


def test_console_files_are_served_and_hold_no_remote_or_markup() -> None:
    static = resources.files("tessera.server") / "static"
    html = (static / "console.html").read_text()
    assert '<script type="module" src="/console.js"></script>' in html
    assert "<script>" not in html and "style=" not in html
    for name in (*SCRIPTS, "console.html", "console.css"):
        text = (static / name).read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
        assert "innerHTML" not in text and "outerHTML" not in text, name
        assert "insertAdjacentHTML" not in text and "eval(" not in text, name
    for name in SCRIPTS:
        text = (static / name).read_text()
        for imported in re.findall(r'from "\./([\w-]+\.js)"', text):
            assert imported in SCRIPTS, (name, imported)


def test_console_scripts_are_served_as_javascript(site: Site) -> None:
    client = site.client()
    for name in SCRIPTS:
        resp = client.get("/" + name)
        assert resp.status_code == 200, name
        assert resp.headers["content-type"].startswith("text/javascript"), name
        assert "default-src 'self'" in resp.headers["content-security-policy"]

"""The gateway (`tessera serve`) on loopback with three custodian nodes: tokens and
roles, secure SQL and DP through the API, every request in the signed audit log, the
console's files and headers."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_fixtures import BIN, PASSPHRASE, Gateway, chromium, running_gateway
from gateway_fixtures import serve as _serve
from gateway_fixtures import sign_in as _sign_in
from gateway_fixtures import wait_text as _wait_text

from tessera.workflows.environment import init_environment
from tessera.workflows.people import roster_from_nodes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("gateway")) as gw:
        yield gw


def test_tokens_and_roles(gateway: Gateway) -> None:
    roster = roster_from_nodes(gateway.env)
    assert {p.name: sorted(p.roles) for p in roster.people} == {
        "owner": ["officer", "researcher", "steward"],
        "alice": ["researcher"],
        "sam": ["researcher", "steward"],
        "olga": ["officer"],
    }
    assert gateway.get("api/v1/health").json()["status"] == "ok"
    assert gateway.get("api/v1/me").status_code == 401
    bad = httpx.get(gateway.url + "api/v1/me", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"] == "unauthenticated"
    assert gateway.get("api/v1/me", "researcher").json() == {"name": "alice", "role": "researcher"}
    denied = gateway.get("api/v1/vault", "researcher")
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
    assert gateway.get("api/v1/audit/verify", "steward").status_code == 403
    assert gateway.get("api/v1/vault", "steward").json() == []
    names = {t["name"] for t in gateway.get("api/v1/tables", "researcher").json()}
    assert names == {"patients", "private"}


def test_query_through_the_api_is_exact_and_audited_by_hash(gateway: Gateway) -> None:
    sql = "SELECT hospital, COUNT(*) AS n, AVG(cd4) FROM patients GROUP BY hospital"
    doc = gateway.post("api/v1/query", "researcher", {"sql": sql}).json()
    assert doc["columns"] == ["hospital", "n", "AVG(cd4)"] and doc["privacy"] is None
    for hospital, n, mean in doc["rows"]:
        mine = [r for r in gateway.rows if r["hospital"] == hospital]
        cd4 = [int(r["cd4"]) for r in mine if r["cd4"]]
        assert n == len(mine)
        assert mean == pytest.approx(sum(cd4) / len(cd4), rel=1e-6)
    events = gateway.get("api/v1/audit/events", "officer", params={"limit": 20}).json()
    mine = [e for e in events if e["action"] == "query" and e["user"] == "alice"]
    assert mine and mine[0]["role"] == "researcher" and mine[0]["address"] == "127.0.0.1"
    records = (gateway.env.home / "audit" / "records.jsonl").read_text()
    assert "AVG(cd4)" not in records  # the text of a query is never stored
    bad = gateway.post("api/v1/query", "researcher", {"sql": "DROP TABLE patients"})
    assert bad.status_code in (400, 422) and "error" in bad.json()


def test_dp_through_the_api_charges_the_users_own_budget(gateway: Gateway) -> None:
    sql = "SELECT COUNT(*) AS n FROM private"
    doc = gateway.post("api/v1/query", "researcher", {"sql": sql, "epsilon": 0.5}).json()
    privacy = doc["privacy"]
    assert privacy is not None and privacy["epsilon"] <= 0.5 + 1e-9
    lo, hi = privacy["columns"][0]["intervals"][0]
    assert lo <= doc["rows"][0][0] <= hi
    own = gateway.get("api/v1/budget", "researcher").json()
    assert [b["researcher"] for b in own] == ["alice"]
    # issue #17: her own spending and share only, never the table's totals
    assert not {"total_rho", "pending_rho", "policy"} & set(own[0])
    assert own[0]["spent_rho"] > 0 and own[0]["spent_epsilon"] <= 0.5 + 1e-9
    assert own[0]["remaining_rho"] == pytest.approx(own[0]["share_rho"] - own[0]["spent_rho"])
    everyone = gateway.get("api/v1/budget", "steward").json()
    assert everyone and everyone[0]["table"] == "private"
    too_much = gateway.post("api/v1/query", "researcher", {"sql": sql, "epsilon": 5})
    assert too_much.status_code == 403 and too_much.json()["error"] in (
        "policy_refused",
        "budget_exhausted",
    )


def test_officer_sees_a_verified_log_and_failed_logins(gateway: Gateway) -> None:
    for _ in range(3):
        httpx.get(gateway.url + "api/v1/me", headers={"Authorization": "Bearer guess"})
    report = gateway.get("api/v1/audit/verify", "officer").json()
    assert report["ok"] is True and report["entries"] > 5
    events = gateway.get("api/v1/audit/events", "officer", params={"limit": 50}).json()
    assert sum(e["action"] == "login" and e["outcome"] == "failure" for e in events) >= 3
    assert gateway.get("api/v1/monitor/alerts", "officer").status_code == 200
    bad = gateway.get("api/v1/audit/events", "officer", params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"


def test_console_files_and_headers(gateway: Gateway) -> None:
    page = gateway.get("")
    assert page.status_code == 200 and "<title>Tessera console</title>" in page.text
    assert "script-src" not in page.text and "<script>" not in page.text  # no inline code
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    js = gateway.get("console.js")
    assert js.status_code == 200 and "sessionStorage" in js.text
    assert "innerHTML" not in js.text  # values from the server go in as text only
    assert gateway.get("console.css").headers["content-type"].startswith("text/css")


def test_serve_refuses_an_open_address_without_tls(tmp_path: Path) -> None:
    env = init_environment(tmp_path / "home", nodes=3, passphrase=PASSPHRASE.encode())
    done = subprocess.run(
        [str(BIN), "serve", "--host", "0.0.0.0", "--port", "0", "--home", str(env.home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "needs --tls-cert" in done.stderr


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


def test_console_in_headless_chromium(gateway: Gateway, browser: Any) -> None:
    """A researcher signs in, runs a secure query and sees the exact count; an officer
    sees the verified audit trail with that query in it; no script errors, no token
    in any URL."""
    from selenium.webdriver.common.by import By

    _sign_in(browser, gateway, "researcher")
    assert _wait_text(browser, "who", "alice") == "alice (researcher)"
    tabs = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#tabs button")]
    assert tabs == ["query", "tables", "budget"]
    sql = browser.find_element(By.ID, "sql")
    sql.clear()
    sql.send_keys("SELECT COUNT(*) AS n FROM patients")
    browser.find_element(By.CSS_SELECTOR, "#query-form button").click()
    result = _wait_text(browser, "query-result", str(len(gateway.rows)))
    assert result.split() == ["n", str(len(gateway.rows))]
    assert gateway.tokens["researcher"] not in browser.current_url
    browser.find_element(By.ID, "signout").click()

    _sign_in(browser, gateway, "officer")
    assert _wait_text(browser, "who", "olga") == "olga (officer)"
    assert _wait_text(browser, "audit-status", "verified").startswith("verified:")
    events = _wait_text(browser, "audit-events", "query")
    assert "alice" in events and "researcher" in events
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


def test_api_docs_page_in_headless_chromium(gateway: Gateway, browser: Any) -> None:
    """/docs renders the OpenAPI document with the gateway's own files only."""
    browser.get(gateway.url + "docs")
    text = _wait_text(browser, "operations", "POST /api/v1/query")
    assert "GET /api/v1/budget" in text and "ErrorBody" in text
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


def test_failed_sign_ins_lock_the_address_out(gateway: Gateway) -> None:
    """A second gateway on the same environment, locking out after 3 failures."""
    home = gateway.env.home
    proc, url = _serve(home, "--max-failed-logins", "3")
    try:
        for _ in range(3):
            bad = httpx.get(url + "api/v1/me", headers={"Authorization": "Bearer guess"})
            assert bad.status_code == 401
        good = {"Authorization": f"Bearer {gateway.tokens['researcher']}"}
        locked = httpx.get(url + "api/v1/me", headers=good)
        assert locked.status_code == 429 and locked.json()["error"] == "too_many_attempts"
        assert "try again in" in locked.json()["message"]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    from tessera.workflows.audit import gateway_log

    newest = gateway_log(home).tail(5)
    reasons = [e.detail.get("reason") for _, e in newest if e.action == "login"]
    assert reasons[0] == "throttled" and reasons[1:4] == ["unknown token"] * 3
    # the first gateway (default limit) still lets the researcher in
    assert gateway.get("api/v1/me", "researcher").status_code == 200


def _fuzz(
    operation: Any, mode: Any, auth: dict[str, str], seen: Counter[tuple[str, int]], examples: int
) -> None:
    """Schemathesis on one operation in one generation mode, bounded and repeatable."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        response_schema_conformance,
        content_type_conformance,
        negative_data_rejection,
    ]

    @given(case=operation.as_strategy(generation_mode=mode, headers=auth))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=auth, checks=checks)
        seen[(operation.label, response.status_code)] += 1

    try:
        run()
    except Unsatisfiable:  # nothing to negate: no parameters and no body
        assert mode == GenerationMode.NEGATIVE
        assert not operation.query and not operation.body, operation.label


def test_schemathesis_finds_no_server_error_and_no_nonconformance(gateway: Gateway) -> None:
    """Every operation with positive and negative data, as a researcher, a steward and an
    officer, against the gateway app in this process over the same environment and nodes
    (its own lockout, so the failures it provokes do not lock the served gateway out):
    no 5xx, every status and answer as published."""
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis.generation import GenerationMode

    from tessera.server.app import create_app

    app = create_app(gateway.env.home, max_failed_logins=1_000_000)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 19
    seen: Counter[tuple[str, int]] = Counter()
    # the researcher reaches the most routes past their role checks: the most examples
    for role, examples in (("researcher", 25), ("steward", 10), ("officer", 10)):
        auth = {"Authorization": f"Bearer {gateway.tokens[role]}"}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for operation in operations:
                _fuzz(operation, mode, auth, seen, examples)
    assert {label for label, _ in seen} == {op.label for op in operations}
    assert not [key for key in seen if key[1] >= 500]
    assert ("GET /api/v1/vault", 200) in seen and ("GET /api/v1/audit/verify", 200) in seen

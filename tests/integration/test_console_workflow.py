"""The console's whole workflow in headless Chromium, over a real gateway and three
custodian nodes: a researcher files a request, the steward approves it in the inbox,
the researcher runs it and sees a bar per group with DP error bars; a held output is
reviewed (its result shown) and released; budget gauges; the vault's health grid with
a damaged fragment and an upload from the browser; the officer's alert timeline and
the log verified against the custodians.  Screenshots go to $TESSERA_TEST_ARTEFACTS
(else the test's own tmp folder), never into the repository."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_fixtures import (
    Gateway,
    artefacts,
    chromium,
    console_world,
    damage,
    fragment_files,
    running_gateway,
    severe_errors,
    sign_in,
    wait_text,
)

from tessera.workflows.vault import open_vault

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("console-workflow")]

DP_SQL = "SELECT hospital, COUNT(*) AS n FROM gated GROUP BY hospital"
HELD_SQL = "SELECT sex, COUNT(*) AS n FROM checked GROUP BY sex"
WAIT_S = 120


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("console"), console_world) as gw:
        yield gw


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


class Console:
    """One browser on the console: sign in as a role, open tabs, wait, take pictures."""

    def __init__(self, driver: Any, gateway: Gateway, shots: Path) -> None:
        self.driver, self.gateway, self.shots = driver, gateway, shots

    def sign_in(self, role: str, name: str) -> None:
        if self.driver.find_elements(*self._css("#signout:not([hidden])")):
            self.click("#signout")
        sign_in(self.driver, self.gateway, role)
        wait_text(self.driver, "who", name)

    def tab(self, name: str) -> None:
        self.click(f"#tabs button[data-tab='{name}']")

    def click(self, css: str) -> None:
        self.find(css).click()

    def type(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def find(self, css: str) -> Any:
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, WAIT_S).until(
            ec.visibility_of_element_located(self._css(css))
        )

    def gone(self, css: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, WAIT_S).until(lambda d: not d.find_elements(*self._css(css)))

    def all(self, css: str) -> list[Any]:
        return list(self.driver.find_elements(*self._css(css)))

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    @staticmethod
    def _css(css: str) -> tuple[str, str]:
        from selenium.webdriver.common.by import By

        return (By.CSS_SELECTOR, css)


@pytest.fixture
def console(browser: Any, gateway: Gateway, tmp_path: Path) -> Console:
    return Console(browser, gateway, artefacts(tmp_path))


def _request_ids(gateway: Gateway) -> list[str]:
    return [r["id"] for r in gateway.get("api/v1/requests", "steward").json()]


def test_file_approve_run_and_see_the_chart(console: Console, gateway: Gateway) -> None:
    console.sign_in("researcher", "alice")
    console.type("#request-sql", DP_SQL)
    console.type("#request-purpose", "hospital sizes for the protocol")
    console.type("#request-epsilon", "0.5")
    console.click("#request-form button")
    wait_text(console.driver, "request-status", "filed request")
    (rid,) = _request_ids(gateway)
    assert wait_text(console.driver, "my-requests", "pending")
    console.shot("1-researcher-filed-a-request")

    console.sign_in("steward", "sam")
    card = f"#inbox article[data-id='{rid}']"
    assert "hospital sizes for the protocol" in console.find(card).text
    console.type(f"{card} textarea.reason", "within protocol 7")
    console.shot("2-steward-inbox")
    console.click(f"{card} button.approve")
    console.gone(card)
    assert "approved" in wait_text(console.driver, "decided", "within protocol 7")

    console.sign_in("researcher", "alice")
    console.click(f"#my-requests button.run[data-id='{rid}']")
    wait_text(console.driver, "request-run-status", "differentially private")
    chart = console.find("#request-chart svg[data-chart='bar']")
    bars = chart.find_elements(*Console._css("rect.bar"))
    assert sorted(b.get_attribute("data-label") for b in bars) == [
        "hospital-1",
        "hospital-2",
        "hospital-3",
    ]
    assert len(chart.find_elements(*Console._css(".error-bar"))) == 3  # the DP intervals
    assert gateway.tokens["researcher"] not in console.driver.current_url
    console.shot("3-researcher-result-chart")
    console.tab("budget")
    gauge = console.find("#budget svg[data-chart='gauge']")
    assert float(gauge.get_attribute("data-spent")) > 0
    assert "gated" in console.find("#budget").text
    console.shot("4-researcher-budget")
    assert severe_errors(console.driver) == []


def test_a_held_output_is_reviewed_and_released_in_the_inbox(
    console: Console, gateway: Gateway
) -> None:
    filed = gateway.post("api/v1/requests", "researcher", {"sql": HELD_SQL, "purpose": "sexes"})
    rid = filed.json()["id"]
    gateway.post(f"api/v1/requests/{rid}/approve", "steward", {"reason": "ok"}).raise_for_status()
    held = gateway.post(f"api/v1/requests/{rid}/run", "researcher", {}).json()
    assert held["held"] is True, held
    output = held["request"]

    console.sign_in("steward", "sam")
    card = f"#inbox article[data-id='{output}']"
    text = console.find(card).text
    assert "Held output" in text and held["reasons"][0] in text
    result = console.find(f"{card} .held-result table")  # the held result, before deciding
    assert "sex" in result.text and "F" in result.text
    assert console.all(f"{card} .held-result svg[data-chart='bar']")
    console.type(f"{card} textarea.reason", "counts of sex are public")
    console.shot("5-steward-reviews-a-held-output")
    console.click(f"{card} button.approve")
    console.gone(card)
    assert gateway.get(f"api/v1/requests/{output}", "steward").json()["state"] == "released"

    console.tab("budget")
    console.find("#budget-researchers svg[data-chart='gauge']")
    assert "alice on gated" in console.find("#budget-researchers").text
    console.shot("6-steward-budgets")
    assert severe_errors(console.driver) == []


def test_vault_grid_and_upload_from_the_browser(
    console: Console, gateway: Gateway, tmp_path: Path
) -> None:
    source = tmp_path / "consent-form.txt"
    source.write_bytes(b"signed consent, patient 17\n" * 100)
    console.sign_in("steward", "sam")
    console.tab("vault")
    console.find("#upload-file").send_keys(str(source))
    assert console.find("#upload-name").get_attribute("value") == "consent-form.txt"
    console.click("#upload-form button")
    wait_text(console.driver, "upload-status", "stored consent-form.txt")
    out = tmp_path / "back.txt"
    open_vault(gateway.env).get("consent-form.txt", out)
    assert out.read_bytes() == source.read_bytes()
    cell = "#vault-grid [data-object='consent-form.txt'][data-store='{}']"
    assert console.find(cell.format(1)).get_attribute("data-state") == "healthy"
    # the same name again, without replace: refused with the reason
    console.find("#upload-file").send_keys(str(source))
    console.click("#upload-form button")
    wait_text(console.driver, "upload-status", "already in the vault")

    (fragment,) = fragment_files(gateway.env, 1)
    damage(fragment)
    console.tab("vault")
    console.find(cell.format(1) + "[data-state='damaged']")
    assert console.find(cell.format(2)).get_attribute("data-state") == "healthy"
    assert "degraded" in console.find("#vault-status").text
    console.shot("7-vault-grid-with-damage")
    assert severe_errors(console.driver) == []


def test_officer_sees_the_alert_timeline_and_the_witnessed_log(
    console: Console, gateway: Gateway
) -> None:
    for i in range(12):  # failed sign-ins: the monitor's brute-force rule fires
        bad = httpx.get(gateway.url + "api/v1/me", headers={"Authorization": f"Bearer guess{i}"})
        assert bad.status_code == 401
    console.sign_in("officer", "olga")
    assert wait_text(console.driver, "audit-status", "verified").startswith("verified:")
    assert "verified against 3 of 3 custodians" in wait_text(
        console.driver, "audit-custodians", "custodians"
    )
    timeline = console.find("#alert-timeline svg[data-chart='timeline']")
    alerts = timeline.find_elements(*Console._css("g.alert[data-kind='brute-force']"))
    severities = {a.get_attribute("class").split()[-1] for a in alerts}
    assert severities and severities <= {"sev-high", "sev-critical"}  # critical: a success follows
    events = console.find("#audit-events time")
    assert events.get_attribute("title").endswith("Z")  # ISO in the title, local time shown
    assert len(events.text) == len("2026-12-04 14:03:12")
    console.shot("8-officer-audit-and-alerts")
    scan = gateway.get("api/v1/monitor/alerts", "officer").json()
    (console.shots / "8-alerts.json").write_text(json.dumps(scan, indent=1))
    console.tab("vault")
    # the grid, or its note on an empty vault (this test may run before the upload one)
    console.find("#vault-grid table, #vault-grid p.muted")
    assert console.all("#upload-form[hidden]")  # officers see the grid, never upload
    assert severe_errors(console.driver) == []


def test_charts_draw_histograms_and_error_bars(console: Console, gateway: Gateway) -> None:
    """The chart code on synthetic answers: binned labels make a histogram (bins in
    order), other labels a bar chart; DP intervals become error bars."""
    console.driver.get(gateway.url)
    drawn = console.driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        import("/console-charts.js").then((m) => {
          const iv = [[10, 14], [3, 7], [18, 22], [5, 9]];
          const binned = {columns: ["age", "n"], privacy: {columns: [{intervals: null},
            {intervals: iv}]}, rows: [["30-39", 12], ["18-29", 5], ["40-49", 20], ["50+", 7]]};
          const plain = {columns: ["sex", "n", "mean"], privacy: null,
            rows: [["F", 40, 1.5], ["M", 38, null]]};
          const shape = (c) => ({kind: c.dataset.chart, bars: c.querySelectorAll("rect.bar").length,
            errors: c.querySelectorAll(".error-bar").length,
            first: c.querySelector("rect.bar").dataset.label});
          done([...m.chartsFor(binned), ...m.chartsFor(plain)].map(shape));
        }, (e) => done(String(e)));
        """
    )
    assert drawn == [
        {"kind": "histogram", "bars": 4, "errors": 4, "first": "18-29"},
        {"kind": "bar", "bars": 2, "errors": 0, "first": "F"},
        {"kind": "bar", "bars": 1, "errors": 0, "first": "F"},
    ]
    assert severe_errors(console.driver) == []

"""A gateway (`tessera serve`) on loopback over three custodian nodes, and headless
Chromium to drive its console: shared by the gateway and console tests."""

from __future__ import annotations

import csv
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tessera.cli.main import main
from tessera.config import Environment
from tessera.dp import Policy
from tessera.dp.policy import OutputChecks
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import stop_nodes
from tessera.workflows.people import Signer, unlock
from tessera.workflows.policies import catalog_bounds, set_policy
from tessera.workflows.tables import import_csv
from tessera.workflows.users import add_user
from tessera.workflows.vault import init_vault

BIN = Path(sys.executable).with_name("tessera")
PASSPHRASE = "test passphrase"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def serve(home: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``tessera serve --port 0`` on ``home``; the process and its URL."""
    log = home / f"serve-{len(list(home.glob('serve-*.err')))}.err"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(BIN), "serve", "--port", "0", *extra, "--home", str(home)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("gateway listening on "), line + log.read_text()
    return proc, line.split(" on ", 1)[1].strip()


class Gateway:
    """Users alice (researcher), sam (steward) and olga (officer), and the gateway
    serving them; ``prepare`` runs once they exist, before the gateway starts."""

    def __init__(
        self,
        env: Environment,
        rows: list[dict[str, str]],
        owner: Signer,
        prepare: Callable[[Gateway], None] | None = None,
    ) -> None:
        self.env, self.rows, self.owner = env, rows, owner
        home = env.home
        # every user joins the custodians' roster, their key encrypted under their token
        self.tokens = {
            "researcher": add_user(home, "alice", "researcher", [owner]),
            "steward": add_user(home, "sam", "steward", [owner]),
        }
        # a second privileged person: now two privileged people sign a privileged change
        sam = unlock(env, "sam", self.tokens["steward"].encode(), record=False, gateway=True)
        self.tokens["officer"] = add_user(home, "olga", "officer", [owner, sam])
        if prepare is not None:
            prepare(self)
        self.proc, self.url = serve(home)

    def signer(self, role: str, name: str) -> Signer:
        """The user's own key, unlocked with their token (as the gateway does)."""
        token = self.tokens[role].encode()
        return unlock(self.env, name, token, record=False, gateway=True)

    def get(self, path: str, role: str | None = None, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers=self._auth(role), timeout=120, **kw)

    def post(self, path: str, role: str | None, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.url + path, headers=self._auth(role), json=body, timeout=300)

    def _auth(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


@contextmanager
def running_gateway(
    base: Path, prepare: Callable[[Gateway], None] | None = None
) -> Iterator[Gateway]:
    """Tables ``patients`` (exact) and ``private`` (DP, total epsilon 2) from a
    240-patient cohort over three hospitals, the vault, and a :class:`Gateway`."""
    data = base / "data"
    cohort = importlib.import_module("tessera.samples.cohort")
    paths = cohort.write_cohort(data, 240, hospitals=3, seed=9)
    env = init_environment(base / "home", nodes=3, passphrase=PASSPHRASE.encode())
    init_vault(env)  # the owner (made by init) owns the vault
    rows: list[dict[str, str]] = []
    gw = None
    try:
        for p in paths:
            for name in ("patients", "private"):
                import_csv(env, p, name, schema_path=data / "patients.schema.yaml", hospital=p.stem)
            with p.open() as fh:
                rows.extend({**r, "hospital": p.stem} for r in csv.DictReader(fh))
        policy = ["table", "policy", "private", "--mode", "dp", "--total-epsilon", "2"]
        with pytest.MonkeyPatch.context() as mp:  # the steward's passphrase, for this only
            mp.setenv("TESSERA_PASSPHRASE", PASSPHRASE)
            mp.delenv("TESSERA_PERSON", raising=False)
            assert main([*policy, "--default-epsilon", "1", "--home", str(env.home)]) == 0
        gw = Gateway(env, rows, unlock(env, "owner", PASSPHRASE.encode()), prepare)
        yield gw
    finally:
        if gw is not None:
            gw.stop()
        stop_nodes(env)


def console_world(gw: Gateway) -> None:
    """What the console tests need, before the gateway starts: ``gated`` (DP, every use
    approved by its steward sam), ``checked`` (exact, approved, outputs checked with a
    threshold of 50 rows: a grouped count of one hospital is held), a second
    researcher bob (``tokens["other"]``), and sam as the vault's owner."""
    env = gw.env
    data = env.home.parent / "data"
    schema = data / "patients.schema.yaml"
    paths = sorted(data.glob("hospital-*.csv"))
    for path in paths:
        import_csv(env, path, "gated", schema_path=schema, hospital=path.stem)
    import_csv(env, paths[0], "checked", schema_path=schema, hospital=paths[0].stem)
    sam = gw.signer("steward", "sam")
    bounds, _ = catalog_bounds(env, "gated")
    dp = Policy.dp(total_epsilon=5.0, default_epsilon=1.0, bounds=bounds)
    set_policy(env, "gated", replace(dp, approval_required=True), steward=sam)
    checked = replace(Policy.none(), approval_required=True, output_checks=OutputChecks(50))
    set_policy(env, "checked", checked, steward=sam)
    gw.tokens["other"] = add_user(env.home, "bob", "researcher", [gw.owner])
    vault = env.extra["vault"]  # sam's own key (under his token) signs the vault's manifests
    vault["signing_key"], vault["verify_key"] = "gateway/keys/sam.key", "gateway/keys/sam.pub"
    env.save()


def fragment_files(env: Environment, store: int) -> list[Path]:
    """The data fragments store ``store`` (a local folder) holds."""
    url = next(s.url for s in env.stores if s.id == store)
    return sorted((Path(url.removeprefix("file://")) / "data").glob("*"))


def damage(path: Path) -> None:
    """Flip one byte in the middle of ``path``."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """Debian's headless Chromium under Selenium (the test skips without them)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Debian chromium and chromium-driver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--window-size=1280,1600",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait_text(driver: Any, element_id: str, needle: str, timeout: float = 120) -> str:
    """The text of ``element_id`` once it contains ``needle``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def seen(d: Any) -> str | bool:
        text = str(d.find_element(By.ID, element_id).text)
        return text if needle in text else False

    return str(WebDriverWait(driver, timeout).until(seen))


def sign_in(driver: Any, gateway: Gateway, role: str) -> None:
    """Open the console and sign in with ``role``'s token."""
    from selenium.webdriver.common.by import By

    driver.get(gateway.url)
    driver.find_element(By.ID, "token").send_keys(gateway.tokens[role])
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()


def severe_errors(driver: Any) -> list[Any]:
    """The browser console's SEVERE entries since the last call."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def artefacts(tmp_path: Path) -> Path:
    """Where screenshots go: ``$TESSERA_TEST_ARTEFACTS``, else ``tmp_path/screenshots``."""
    chosen = os.environ.get("TESSERA_TEST_ARTEFACTS")
    folder = Path(chosen) if chosen else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder

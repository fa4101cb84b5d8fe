"""``tessera request`` end to end through the real command: file, approve, run, refuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tessera.dp import Policy
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import stop_nodes
from tessera.workflows.people import add_person, unlock
from tessera.workflows.policies import set_policy
from tessera.workflows.tables import import_csv

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("request-cli")]

BIN = Path(sys.executable).with_name("tessera")
PASSPHRASE = "request cli passphrase"
SQL = "SELECT smoker, COUNT(*) FROM cohort GROUP BY smoker"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """'cohort' (200 rows) with approval required; owner (steward), rita, otto."""
    base = tmp_path_factory.mktemp("request-cli")
    env = init_environment(base / "env", nodes=3, passphrase=PASSPHRASE.encode())
    csv = base / "cohort.csv"
    csv.write_text("smoker\n" + "".join(f"{'true' if i % 3 else 'false'}\n" for i in range(200)))
    try:
        import_csv(env, csv, "cohort")
        owner = unlock(env, "owner", PASSPHRASE.encode(), record=False)
        add_person(env, "rita", ["researcher"], PASSPHRASE.encode(), [owner])
        add_person(env, "otto", ["officer"], PASSPHRASE.encode(), [owner])
        # the owner stewards 'cohort' whichever test runs first (the CLI sets it again)
        set_policy(env, "cohort", replace(Policy.none(), approval_required=True), steward=owner)
        yield env.home
    finally:
        stop_nodes(env)


def tessera(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TESSERA_PASSPHRASE=PASSPHRASE, TESSERA_HOME=str(home))
    env.pop("TESSERA_PERSON", None)
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


def ok(home: Path, *args: str) -> Any:
    done = tessera(home, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def refused(home: Path, *args: str, code: int = 1) -> str:
    done = tessera(home, *args)
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_file_approve_run_once(home: Path) -> None:
    ok(home, "table", "policy", "cohort", "--approval", "required", "--as", "owner")
    shown = ok(home, "table", "policy", "cohort", "--json")
    assert shown["approval"] == "required" and shown["set"] is True
    assert "requires an approved request" in refused(home, "query", SQL, "--as", "rita")
    filed = ok(home, "request", "file", "--sql", SQL, "--purpose", "smoking rates",
               "--as", "rita", "--json")  # fmt: skip
    rid = filed["id"]
    assert filed["state"] == "pending" and filed["tables"] == ["cohort"]
    # the officer is not the table's steward; the researcher may not approve either
    assert "otto is not the steward of cohort" in refused(
        home, "request", "approve", rid, "--reason", "fine", "--as", "otto"
    )
    assert "rita cannot approve or refuse their own request" in refused(
        home, "request", "approve", rid, "--reason", "fine", "--as", "rita"
    )
    assert "approve" in ok(home, "request", "approve", rid, "--reason", "in protocol",
                           "--as", "owner")  # fmt: skip
    inbox = ok(home, "request", "ls", "--json")
    assert [r["state"] for r in inbox if r["id"] == rid] == ["approved"]
    answer = ok(home, "request", "run", rid, "--as", "rita", "--json")
    assert sorted(answer["rows"]) == [[False, 67], [True, 133]]
    assert "ran already" in refused(home, "request", "run", rid, "--as", "rita")
    detail = ok(home, "request", "show", rid, "--json")
    assert detail["state"] == "done"
    assert detail["decisions"] == [
        {
            "by": "owner",
            "decision": "approve",
            "reason": "in protocol",
            "at": pytest.approx(detail["decisions"][0]["at"]),
        }
    ]


def test_refused_request_and_bad_input(home: Path) -> None:
    filed = ok(home, "request", "file", "--sql", SQL, "--purpose", "again", "--as", "rita",
               "--json")  # fmt: skip
    ok(home, "request", "refuse", filed["id"], "--reason", "duplicate", "--as", "owner")
    assert "was refused" in refused(home, "request", "run", filed["id"], "--as", "rita")
    assert "32 hex digits" in refused(home, "request", "show", "nope", code=2)
    assert "no request" in refused(home, "request", "show", "0" * 32)
    assert "unsupported: DROP" in refused(
        home, "request", "file", "--sql", "DROP TABLE cohort", "--purpose", "x", "--as", "rita"
    )
    assert "reason" in refused(
        home, "request", "approve", filed["id"], "--reason", " ", "--as", "owner", code=2
    )

"""Output: piped output is never wrapped, numbers are rounded for people (not in --json),
and `user add` puts the token alone on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from tessera.cli import person as person_cli
from tessera.cli import user as user_cli
from tessera.cli._common import human
from tessera.cli.main import main
from tessera.config import Environment, StoreConfig

LONG = "a_table_whose_name_is_much_longer_than_any_terminal_line_would_allow_" * 2
ROW = {
    "table": LONG,
    "total_rho": 0.1875,
    "spent_rho": 0.06249999999,
    "pending_rho": 0.0,
    "remaining_rho": 0.12500000001,
    "remaining_epsilon": 2.9999999999180353,
    "delta": 1e-06,
    "researcher_spent_rho": None,
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    stores = [StoreConfig(i, (tmp_path / f"s{i}").as_uri()) for i in (1, 2, 3)]
    Environment(tmp_path / "env", "t", 2, stores, [], 1).save()
    return tmp_path / "env"


def test_human_numbers() -> None:
    assert human(2.9999999999180353) == "3"
    assert human(0.12500000001) == "0.125"
    assert human(1e-06) == "1e-06"
    assert human(7) == "7" and human("x") == "x"
    assert human({"epsilon": 0.30000000000000004, "bounds": [0.1, 1 / 3]}) == (
        "{epsilon: 0.3, bounds: [0.1, 0.333333]}"
    )


def _budget_show(home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`tessera budget show` in its own process, stdout a pipe, the custodians' answer
    stubbed (the figures a node would send)."""
    script = textwrap.dedent(
        f"""
        import sys
        import tessera.cli.budget as budget
        budget.node_budgets = lambda env, table, researcher: [{ROW!r}]
        from tessera.cli.main import main
        sys.exit(main(["budget", "show", "--home", {str(home)!r}, *{list(extra)!r}]))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"},
        check=False,
        timeout=120,
    )


def test_piped_table_never_wraps_and_rounds(home: Path) -> None:
    done = _budget_show(home)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if LONG in line)  # one line
    assert "2.9999999999" not in done.stdout and "0.06249999999" not in done.stdout
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells == [LONG, "0.1875", "0.0625", "0", "0.125", "3", "1e-06"]


def test_json_keeps_full_precision(home: Path) -> None:
    done = _budget_show(home, "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["budgets"]
    assert row["remaining_epsilon"] == 2.9999999999180353


def test_person_ls_piped_never_wraps(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key_id = "f" * 64
    people = [
        SimpleNamespace(
            name=LONG[:60], roles={"researcher", "steward"}, key=SimpleNamespace(key_id=key_id)
        )
    ]
    monkeypatch.setattr(
        person_cli, "roster_from_nodes", lambda env: SimpleNamespace(serial=4, people=people)
    )
    monkeypatch.setattr(person_cli, "local_people", lambda env: [LONG[:60]])
    assert main(["person", "ls", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if LONG[:60] in line)
    assert key_id in row and "researcher, steward" in row and "yes" in row


def test_user_add_prints_the_token_alone_on_stdout(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "tk_" + "x" * 40
    monkeypatch.setattr(user_cli, "acting_signers", lambda env, acting, cosign: [])
    monkeypatch.setattr(user_cli, "add_user", lambda home, name, role, signers: token)
    assert main(["user", "add", "rita", "--role", "researcher", "--home", str(home)]) == 0
    captured = capsys.readouterr()
    assert captured.out == token + "\n"  # what TOKEN=$(tessera user add ...) captures
    assert "added rita (researcher)" in captured.err and token not in captured.err
    assert main(["user", "add", "rita", "--role", "researcher", "--home", str(home), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["token"] == token

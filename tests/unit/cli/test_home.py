"""Finding the environment: `tessera init` says how, and later commands find it.

Explicit beats implicit: --home, then $TESSERA_HOME, then ./.tessera where it exists,
then the environment `tessera init` made last (remembered under $XDG_CONFIG_HOME).
Every "no environment" error names how to make one and how to point at it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tessera.cli import env as env_cli
from tessera.cli._common import resolve_home
from tessera.cli.main import main
from tessera.config import (
    default_home,
    missing_environment,
    remember_home,
    remembered_home,
    remembered_home_file,
)

PASSPHRASE = "first hour passphrase"


@pytest.fixture
def at_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard input a terminal: a person typing, whom `tessera init` remembers for."""
    monkeypatch.setattr(env_cli.sys.stdin, "isatty", lambda: True)


@pytest.fixture
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with no environment, no $TESSERA_HOME, a private config folder."""
    for name in [k for k in os.environ if k.startswith("TESSERA_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _fake_env(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "tessera.toml").write_text("[environment]\n", encoding="utf-8")
    return folder


def test_order_explicit_before_implicit(
    clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_home() == Path(".tessera")  # nothing anywhere: the error names ./.tessera
    made = _fake_env(tmp_path / "made")
    assert remember_home(made) == remembered_home_file()
    assert remembered_home_file().is_relative_to(tmp_path / "config")
    assert default_home() == made  # the last one made
    (clean / ".tessera").mkdir()
    assert default_home() == Path(".tessera")  # ./.tessera where it exists
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "named"))
    assert default_home() == tmp_path / "named"  # $TESSERA_HOME
    assert resolve_home(tmp_path / "flag") == tmp_path / "flag"  # --home
    assert resolve_home(None) == tmp_path / "named"


def test_remembered_environment_that_is_gone_is_ignored(clean: Path, tmp_path: Path) -> None:
    made = _fake_env(tmp_path / "made")
    remember_home(made)
    (made / "tessera.toml").unlink()
    assert remembered_home() is None and default_home() == Path(".tessera")
    remembered_home_file().write_text("relative/path\n", encoding="utf-8")
    assert remembered_home() is None


def test_missing_environment_names_the_fix(clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = str(missing_environment(Path(".tessera")))
    for fix in ("tessera init DIR", "export TESSERA_HOME=DIR", "--home DIR"):
        assert fix in message
    for argv in (
        ["vault", "ls"],
        ["person", "ls"],
        ["budget", "show"],
        ["user", "add", "x", "--role", "researcher"],
        ["user", "ls"],
    ):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 1, (argv, err)
        assert err.count("\n") == 1 and "no Tessera environment" in err, err
        assert "tessera init DIR" in err and "export TESSERA_HOME=DIR" in err, err


def test_readme_sequence_init_then_put(
    clean: Path,
    at_terminal: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`tessera init ~/tessera-env`, then `tessera vault put scan.dcm` elsewhere."""
    monkeypatch.setenv("TESSERA_PASSPHRASE", PASSPHRASE)
    target = tmp_path / "tessera-env"
    assert main(["init", str(target), "--nodes", "3", "--threshold", "2"]) == 0
    out = capsys.readouterr().out
    assert f"export TESSERA_HOME={target}" in out
    assert str(remembered_home_file()) in out
    assert remembered_home() == target.resolve()
    scan = clean / "scan.dcm"
    scan.write_bytes(os.urandom(3000))
    assert main(["vault", "put", str(scan)]) == 0, capsys.readouterr().err
    assert main(["vault", "ls", "--json"]) == 0
    assert "scan.dcm" in capsys.readouterr().out


def test_init_says_when_something_else_takes_precedence(
    clean: Path,
    at_terminal: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TESSERA_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "other"))
    target = tmp_path / "second"
    assert main(["init", str(target), "--nodes", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["home"] == str(target.resolve())
    assert doc["remembered_in"] is None  # $TESSERA_HOME set: scripts need no memory
    assert not remembered_home_file().exists()
    assert main(["init", str(tmp_path / "third"), "--nodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "$TESSERA_HOME points at" in out and f"export TESSERA_HOME={tmp_path / 'third'}" in out


def test_init_without_a_folder_does_not_reuse_the_remembered_one(
    clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remember_home(_fake_env(tmp_path / "made"))
    assert main(["init", "--nodes", "3"]) == 2  # no passphrase: it got as far as asking
    err = capsys.readouterr().err
    assert "already holds" not in err and "TESSERA_PASSPHRASE" in err


def test_scripts_are_told_and_nothing_is_remembered(
    clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a terminal (a script, a test run, the demo) init remembers nothing: it
    would replace the environment the person made last."""
    monkeypatch.setenv("TESSERA_PASSPHRASE", PASSPHRASE)
    target = tmp_path / "scripted"
    assert main(["init", str(target), "--nodes", "3"]) == 0
    out = capsys.readouterr().out
    assert f"--home {target}" in out and f"export TESSERA_HOME={target}" in out
    assert not remembered_home_file().exists()


def test_a_command_on_the_remembered_environment_is_audited_there(
    clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tessera.workflows.audit import gateway_log

    monkeypatch.setenv("TESSERA_PASSPHRASE", PASSPHRASE)
    target = tmp_path / "made"
    assert main(["init", str(target), "--nodes", "3"]) == 0
    remember_home(target)
    scan = clean / "scan.dcm"
    scan.write_bytes(os.urandom(300))
    assert main(["vault", "put", str(scan)]) == 0
    actions = [event.action for _, event in gateway_log(target).events()]
    assert "vault.put" in actions, actions

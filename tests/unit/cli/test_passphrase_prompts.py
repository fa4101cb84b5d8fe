"""Passphrase prompts, driven without a terminal (getpass stubbed); the same flows run
on a real pseudo-terminal in tests/integration/test_key_prompts.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.cli import _keys
from tessera.errors import ConfigError, IntegrityError, UsageError
from tessera.workflows.people import MIN_PASSPHRASE

GOOD = "correct horse battery"


class Keyboard:
    """Answers typed at the prompts, in order, and the prompts asked."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.asked: list[str] = []

    def getpass(self, prompt: str = "") -> str:
        self.asked.append(prompt)
        return self.answers.pop(0)


@pytest.fixture
def keyboard(monkeypatch: pytest.MonkeyPatch) -> Iterator[Keyboard]:
    keys = Keyboard()
    for name in ("TESSERA_PASSPHRASE", "TESSERA_PASSPHRASE_OWNER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_keys, "_interactive", lambda: True)
    monkeypatch.setattr(_keys.getpass, "getpass", keys.getpass)
    yield keys
    assert not keys.answers, f"not asked for: {keys.answers}"


def test_new_passphrase_asks_again_saying_why(
    keyboard: Keyboard, capsys: pytest.CaptureFixture[str]
) -> None:
    keyboard.answers += ["", "x", "y" * (MIN_PASSPHRASE - 1), GOOD, GOOD + "!", GOOD, GOOD]
    assert _keys.ask_new_passphrase("owner") == GOOD.encode()
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "empty passphrase; try again",
        f"too short: at least {MIN_PASSPHRASE} characters; try again",
        f"too short: at least {MIN_PASSPHRASE} characters; try again",
        "the passphrases differ; try again",
    ]
    assert GOOD not in "".join(err)


def test_new_passphrase_gives_up_after_several_tries(keyboard: Keyboard) -> None:
    keyboard.answers += ["x"] * _keys.NEW_ATTEMPTS
    with pytest.raises(UsageError, match="no passphrase set"):
        _keys.ask_new_passphrase("owner")


def test_one_character_passphrase_refused_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TESSERA_PASSPHRASE", "x")
    with pytest.raises(Exception, match=f"at least {MIN_PASSPHRASE} characters"):
        _keys.ask_new_passphrase("owner")


def test_unlock_prompts_on_a_terminal_and_retries(
    keyboard: Keyboard, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tried: list[bytes] = []

    def unlock(env: object, name: str, passphrase: bytes) -> str:
        tried.append(passphrase)
        if passphrase != GOOD.encode():
            raise IntegrityError("wrong")
        return f"signer {name}"

    monkeypatch.setattr(_keys, "unlock", unlock)
    keyboard.answers += ["typo", "", GOOD]
    assert _keys.unlock_person(object(), "owner") == "signer owner"  # type: ignore[arg-type]
    assert tried == [b"typo", GOOD.encode()]
    assert capsys.readouterr().err.splitlines() == [
        "wrong passphrase; try again",
        "empty passphrase; try again",
    ]
    assert keyboard.asked == ["Passphrase for owner's key: "] * 3


def test_without_a_terminal_the_error_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TESSERA_PASSPHRASE", raising=False)
    monkeypatch.setattr(_keys, "_interactive", lambda: False)
    with pytest.raises(ConfigError, match=r"\$TESSERA_PASSPHRASE"):
        _keys.unlock_person(object(), "owner")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"\$TESSERA_PASSPHRASE"):
        _keys.ask_new_passphrase("owner")

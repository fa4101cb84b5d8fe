"""`--help`: no `<bool>` after a flag, no sentence broken where its docstring line ended."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import typer

from tessera.cli.main import build_app, main

TESSERA = [sys.executable, "-m", "tessera.cli.main"]


def _commands(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from _commands(sub, (*path, name))


def test_top_level_help_keeps_sentences_whole() -> None:
    done = subprocess.run(
        [*TESSERA, "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "<bool>" not in done.stdout
    lines = done.stdout.splitlines()
    init = next(line for line in lines if line.lstrip("│ ").startswith("init "))
    assert "the custodians' PKI and roster, and the first person's ML-DSA-65 key" in init
    assert init.rstrip(" │").endswith("(encrypted under their passphrase).")


def test_no_help_text_keeps_its_source_line_breaks() -> None:
    root = typer.main.get_command(build_app())
    for path in _commands(root):
        command = root
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        for text in [command.help, *(getattr(p, "help", None) for p in command.params)]:
            for paragraph in (text or "").split("\n\n"):
                assert "\n" not in paragraph or paragraph.startswith("\b"), (path, paragraph)


def test_no_flag_shows_a_bool_placeholder(capsys: pytest.CaptureFixture[str]) -> None:
    root = typer.main.get_command(build_app())
    paths = list(_commands(root))
    assert ("vault", "put") in paths and ("init",) in paths
    for path in paths:
        assert main([*path, "--help"]) == 0, path
        out = capsys.readouterr().out
        assert "--help" in out, path
        assert "<bool>" not in out, (path, out)
        # a value option shows a placeholder people read, not a Python type
        options = out.split("Options", 1)[-1]
        for typed in ("<str>", "<int>", "<float>", "<path>", "<list[str]>"):
            assert typed not in options, (path, typed, out)

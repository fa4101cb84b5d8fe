"""The demo's step titles are whole, and its last lines say what to try next."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import pytest

from tessera.workflows.demo import BANNER_WIDTH, DemoStep, demo_steps, next_steps


def _steps() -> list[DemoStep]:
    with resources.as_file(resources.files("tessera.samples")) as samples:
        return demo_steps(samples)


def test_titles_are_never_cut() -> None:
    steps = _steps()
    assert len(steps) >= 10
    for step in steps:
        assert "…" not in step.headline and step.headline
        assert step.summary.startswith(step.headline)
        if step.detail:
            assert step.summary.endswith(step.detail[1:])
        banner = step.banner()
        assert banner[1] == f"== {step.script.name}: {step.headline}"
        body = " ".join(banner[3:])
        assert body == step.detail  # the rest of the sentence, whole
        assert all(len(line) <= BANNER_WIDTH for line in banner[3:])
    titles = {s.name: s.headline for s in steps}
    assert titles["vault"] == "The vault" and titles["dicom"] == "DICOM"
    assert titles["recommend"] == "Treatment recommendation on secret records"


def test_next_steps_end_with_three_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)  # an activated environment: no hint
    lines = next_steps()
    assert [line.split()[:2] for line in lines[-3:]] == [
        ["tessera", "init"],
        ["tessera", "vault"],
        ["tessera", "vault"],
    ]
    assert not any("activate" in line for line in lines)


def test_next_steps_say_how_to_put_tessera_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.prefix == sys.base_prefix:
        pytest.skip("not run from a virtual environment")
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    bin_dir = Path(sys.executable).parent
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")  # what `make demo` sets
    hint = [line for line in next_steps() if "activate" in line]
    assert len(hint) == 1 and f". {bin_dir / 'activate'}" in hint[0]

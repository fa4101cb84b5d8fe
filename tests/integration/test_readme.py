"""README.md's shell blocks run as written, in order, in a scratch folder (the rule for
which blocks run and how: ``readme_blocks.py``), so the README cannot drift from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from readme_blocks import README, extract_blocks, run_blocks

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("readme")]


def test_readme_shell_blocks_run_as_written(tmp_path: Path) -> None:
    result = run_blocks(tmp_path / "reader")
    for block in result.skipped:
        print(f"skipped README.md line {block.start}: {block.first.strip()!r} ({block.skip})")
    tail = "\n".join(result.output.splitlines()[-40:])
    assert result.failure is None, f"{result.failure}\n--- last output ---\n{tail}"
    assert len(result.ran) >= 5 and len(result.skipped) <= 2, [b.start for b in result.skipped]
    assert (tmp_path / "reader" / "tessera-env" / "tessera.toml").exists()  # ~ was the scratch


def test_rule_picks_shell_blocks_and_honours_skip_markers() -> None:
    text = "\n".join(
        [
            "```",  # line 1: a shell block without an info string
            "tessera vault ls",
            "```",
            "```",  # prose without an info string (a layout tree)
            "src/tessera/",
            "```",
            "<!-- readme: skip runs until stopped -->",
            "",
            "```sh",
            "tessera serve",
            "```",
            "```text",
            "tessera not run",
            "```",
            "```bash",
            "ID=$(tessera request file --as alice)",
            "```",
        ]
    )
    blocks = extract_blocks(text)
    assert [(b.start, b.first, b.skip) for b in blocks] == [
        (2, "tessera vault ls", None),
        (10, "tessera serve", "runs until stopped"),
        (16, "ID=$(tessera request file --as alice)", None),
    ]
    assert extract_blocks(README.read_text(encoding="utf-8"))  # the real README has some


def test_a_failing_command_is_named_with_its_readme_line(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "\n".join(
            [
                "Intro.",
                "```",
                "tessera share split scan.dcm --threshold 2 --shares 3 \\",
                "    --out fragments/          # a comment, then a continued line",
                "export PLACE=$HOME",
                "```",
                "```sh",
                'test -f fragments/scan.dcm.1-of-3.tfrag && test "$PLACE" = "$PWD"',
                "tessera share combine fragments/*.tfrag --out scan.dcm   # exists: exit 1",
                "echo never",
                "```",
            ]
        )
        + "\n"
    )
    result = run_blocks(tmp_path / "reader", readme=readme)
    assert result.failure == (
        "README.md line 9: tessera share combine fragments/*.tfrag --out scan.dcm"
        "   # exists: exit 1 (exit 1)"
    ), result.output
    assert "never" not in result.output

"""Run the shell blocks of README.md, in order, as a reader would type them.

Which blocks run
    Every fenced block (```` ``` ````) whose info string is ``sh``, ``bash``, ``shell``
    or ``console``, or that has no info string and whose first line starts with a
    command: ``tessera``, ``make``, ``.``/``source``, ``export``, ``cd``, ``curl`` or a
    variable assignment (``TOKEN=$(...)``).  Any other block (``text``, the layout
    tree, tables of figures) is prose.

Skipping a block
    A line ``<!-- readme: skip REASON -->`` as the last non-blank line before the
    opening fence skips that block (``make demo`` and ``make test`` themselves, a
    server that runs until stopped); the runner reports every skipped block with its
    reason.  Keep skips to what cannot run in a test.

How they run
    All blocks go into one bash script (``set -E -o pipefail``; the first failing
    command stops it and is reported with the README line it came from), run by one
    ``bash`` in a scratch folder that stands for the reader's machine:

    * ``HOME`` is the scratch folder (``~/tessera-env`` lands there) and
      ``XDG_CONFIG_HOME`` is ``$HOME/.config`` (the environment ``init`` remembers);
    * ``.venv`` there links to the repository's virtual environment, so
      ``. .venv/bin/activate`` works as written, and ``.venv/bin`` is on ``PATH``;
    * ``TESSERA_PASSPHRASE`` answers every passphrase prompt; ``TESSERA_HOME`` and
      ``TESSERA_PERSON`` are unset;
    * standard input is a pseudo-terminal, as for a person at a terminal (``init``
      remembers the environment it made only then); standard output and error are
      captured;
    * the files a reader brings (``scan.dcm``, ``patients.schema.yaml``,
      ``hospital-a.csv``, ``sites.csv``) are made first from the samples that ship with
      the package (:func:`reader_files`).

    At the end, even after a failure, ``tessera node stop --home DIR`` runs for every
    environment the blocks made, and any job the blocks left in the background is
    killed, so no process outlives the run.
"""

from __future__ import annotations

import contextlib
import csv
import os
import pty
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "ReadmeRun", "extract_blocks", "reader_files", "run_blocks"]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PASSPHRASE = "readme passphrase"  # at least 10 characters

_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
_SKIP = re.compile(r"^<!--\s*readme:\s*skip\b\s*(.*?)\s*-->$")
_SHELL_INFO = {"sh", "bash", "shell", "console"}
_COMMAND = re.compile(r"^(tessera|make|\.|source|export|cd|curl)(\s|$)|^[A-Za-z_]\w*=")
_FAILED = "__readme_failed__"


@dataclass(frozen=True)
class Block:
    """One fenced shell block: ``start`` is the README line of its first code line."""

    start: int
    lines: tuple[str, ...]
    skip: str | None  # the reason, for a block marked ``<!-- readme: skip ... -->``

    @property
    def first(self) -> str:
        return self.lines[0] if self.lines else ""


@dataclass(frozen=True)
class ReadmeRun:
    returncode: int
    output: str  # stdout and stderr, interleaved
    failure: str | None  # "README.md line N: <command>" when a command failed
    ran: tuple[Block, ...]
    skipped: tuple[Block, ...]


def _is_shell(info: str, lines: list[str]) -> bool:
    if info:
        return info in _SHELL_INFO
    first = next((line for line in lines if line.strip()), "")
    return bool(_COMMAND.match(first))


def extract_blocks(text: str) -> list[Block]:
    """The README's shell blocks, in order (see the module docstring for the rule)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        fence, info = opened.group(1), opened.group(2).lower()
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        end = i + 1
        while end < len(lines) and not lines[end].startswith(fence[0] * len(fence)):
            end += 1
        body = lines[i + 1 : end]
        if _is_shell(info, body):
            marked = _SKIP.match(before)
            reason = (marked.group(1) or "no reason given") if marked else None
            blocks.append(Block(i + 2, tuple(body), reason))
        i = end + 1
    return blocks


def reader_files(folder: Path) -> None:
    """The files a reader brings to the README's commands, from the package samples."""
    from pydicom.data import get_testdata_file

    shutil.copyfile(str(get_testdata_file("CT_small.dcm")), folder / "scan.dcm")
    samples = folder / "samples"
    subprocess.run(
        [sys.executable, "-m", "tessera.samples.cohort", str(samples), "--rows", "240",
         "--hospitals", "3", "--seed", "11"],
        check=True, capture_output=True, cwd=folder,
    )  # fmt: skip
    shutil.copyfile(samples / "patients.schema.yaml", folder / "patients.schema.yaml")
    shutil.copyfile(samples / "hospital-1.csv", folder / "hospital-a.csv")
    rows: list[dict[str, str]] = []
    for h in (2, 3):  # a registry's CSV naming each row's hospital
        with open(samples / f"hospital-{h}.csv", newline="", encoding="utf-8") as f:
            rows += [{**row, "hospital": f"hospital-{h}"} for row in csv.DictReader(f)]
    with open(folder / "sites.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _script(blocks: list[Block]) -> tuple[str, dict[int, int]]:
    """The bash script, and script line -> README line."""
    out = [
        "set -E -o pipefail",
        "__stop_all() {",
        "  trap - ERR",
        '  for job in $(jobs -p); do kill "$job" 2>/dev/null; done',
        "  find \"$HOME\" -name tessera.toml -not -path '*/.venv/*' -print0 2>/dev/null |",
        '    while IFS= read -r -d "" toml; do',
        '      tessera node stop --home "$(dirname "$toml")" >/dev/null 2>&1',
        "    done",
        "}",
        "trap __stop_all EXIT",
        f"trap 'echo \"{_FAILED} $LINENO $?\" >&2; exit 1' ERR",
    ]
    if os.environ.get("README_BLOCKS_TRACE"):  # each command, timed, on stderr
        out += ["PS4='+ ${EPOCHREALTIME} line ${LINENO}: '", "set -x"]
    where: dict[int, int] = {}
    for block in blocks:
        out.append(f": README.md block at line {block.start}")
        for offset, line in enumerate(block.lines):
            out.append(line)
            where[len(out)] = block.start + offset
    return "\n".join(out) + "\n", where


def _environment(scratch: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TESSERA_", "VIRTUAL_ENV", "PYTEST_", "COV_"))
    }
    venv_bin = str(ROOT / ".venv" / "bin")
    env.update(
        HOME=str(scratch),
        XDG_CONFIG_HOME=str(scratch / ".config"),
        TESSERA_PASSPHRASE=PASSPHRASE,
        PATH=venv_bin + os.pathsep + env.get("PATH", "/usr/bin:/bin"),
        PWD=str(scratch),
    )
    return env


def run_blocks(scratch: Path, readme: Path = README, timeout: float = 300) -> ReadmeRun:
    """Run ``readme``'s shell blocks in ``scratch`` (made if needed)."""
    scratch.mkdir(parents=True, exist_ok=True)
    blocks = extract_blocks(readme.read_text(encoding="utf-8"))
    ran = [b for b in blocks if b.skip is None]
    skipped = [b for b in blocks if b.skip is not None]
    reader_files(scratch)
    with contextlib.suppress(FileExistsError):
        (scratch / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    text, where = _script(ran)
    script = scratch / ".readme-blocks.sh"
    script.write_text(text, encoding="utf-8")
    env = _environment(scratch)
    master, slave = pty.openpty()  # the reader's terminal: stdin only
    try:
        proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", str(script)],
            cwd=scratch, env=env, stdin=slave, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        slave = -1
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            output, _ = proc.communicate(timeout=60)
            output += f"\n{_FAILED} 0 timeout after {timeout:.0f} s\n"
            for toml in scratch.rglob("tessera.toml"):  # in case bash died before its trap
                if ".venv" not in toml.parts:
                    subprocess.run(
                        ["tessera", "node", "stop", "--home", str(toml.parent)],
                        env=env, capture_output=True, timeout=120, check=False,
                    )  # fmt: skip
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    failure = None
    for line in output.splitlines():
        if line.startswith(_FAILED) and failure is None:  # the first is the command
            _, lineno, status = line.split(" ", 2)
            at = where.get(int(lineno))
            source = readme.read_text(encoding="utf-8").splitlines()[at - 1] if at else ""
            failure = (
                f"README.md line {at}: {source.strip()} (exit {status})"
                if at
                else f"the README's blocks did not finish ({status})"
            )
    if proc.returncode != 0 and failure is None:
        failure = f"bash exited {proc.returncode}"
    return ReadmeRun(proc.returncode, output, failure, tuple(ran), tuple(skipped))


def main(argv: list[str]) -> int:
    """``python tests/integration/readme_blocks.py [SCRATCH]``: run the blocks, report, exit 0/1."""
    import tempfile

    scratch = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="tessera-readme-"))
    result = run_blocks(scratch.resolve())
    sys.stdout.write(result.output)
    for block in result.skipped:
        print(f"skipped README.md line {block.start}: {block.first!r} ({block.skip})")
    print(result.failure or f"{len(result.ran)} blocks ran in {shlex.quote(str(scratch))}")
    return 1 if result.failure else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

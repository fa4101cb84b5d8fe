"""Every command that needs a person's key asks for the passphrase on a terminal.

Driven through a pseudo-terminal (``pty.fork``): ``tessera init`` asks twice, says why
an empty, short or mismatched entry is refused and asks again; signing commands ask
for the acting person's passphrase and retry after a typo; without a terminal and
without ``$TESSERA_PASSPHRASE`` they fail with one line naming the variable.  The
environment folder is then scanned: no person's key, seed or CA key in the clear.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from keyscan import plain_keys

from tessera.samples.cohort import write_cohort

# one worker runs the module: its tests share one environment and its node processes
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("key_prompts")]

BIN = str(Path(sys.executable).with_name("tessera"))
GOOD = "correct horse battery"
BOB = "bob's long passphrase"


# `tessera init` remembers the environment it made under $XDG_CONFIG_HOME: a private one
_CONFIG: dict[str, str] = {}


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env["TERM"] = "dumb"
    env.update(_CONFIG)
    return env


def on_tty(
    argv: list[str], steps: list[tuple[str, str]], timeout: float = 120, cwd: Path | None = None
) -> tuple[int, str]:
    """Run ``tessera argv`` on a pseudo-terminal; for each (prompt, answer) wait for the
    prompt (after the previous one) and type the answer.  Exit code and all output."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        if cwd is not None:
            os.chdir(cwd)
        os.execve(BIN, [BIN, *argv], _clean_env())
    out = b""
    seen = 0
    deadline = time.monotonic() + timeout

    def read_some() -> bool:
        nonlocal out
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            return True
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return False
        out += chunk
        return bool(chunk)

    try:
        for prompt, answer in steps:
            while prompt.encode() not in out[seen:]:
                assert time.monotonic() < deadline, f"no prompt {prompt!r} in {out[-500:]!r}"
                if not read_some():
                    raise AssertionError(f"ended before {prompt!r}: {out[-500:]!r}")
            seen = out.index(prompt.encode(), seen) + len(prompt)
            os.write(fd, answer.encode() + b"\n")
        while time.monotonic() < deadline and read_some():
            pass
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def plain(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN, *argv], capture_output=True, text=True, env=_clean_env(), timeout=300, check=False
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("prompts")
    _CONFIG["XDG_CONFIG_HOME"] = str(base / "config")
    folder = base / "env"
    code, out = on_tty(
        ["init", str(folder), "--nodes", "3"],
        [
            ("New passphrase for owner's key:", ""),
            ("New passphrase for owner's key:", "x"),
            ("New passphrase for owner's key:", "short"),
            ("New passphrase for owner's key:", GOOD),
            ("Repeat the passphrase:", GOOD + "x"),
            ("New passphrase for owner's key:", GOOD),
            ("Repeat the passphrase:", GOOD),
        ],
    )
    assert code == 0, out
    for said in ("empty passphrase; try again", "too short", "the passphrases differ"):
        assert said in out
    assert GOOD not in out  # never echoed
    assert out.count("too short") == 2
    assert f"export TESSERA_HOME={folder}" in out  # how later commands find it
    paths = write_cohort(base / "data", 60, hospitals=1, seed=1)
    done = plain(["table", "import", str(paths[0]), "--name", "t", "--home", str(folder)])
    assert done.returncode == 0, done.stderr
    try:
        yield folder
    finally:
        plain(["node", "stop", "--home", str(folder)])


def test_signing_commands_prompt_and_retry(home: Path, tmp_path: Path) -> None:
    h = ["--home", str(home)]
    (tmp_path / "scan.bin").write_bytes(os.urandom(1000))
    code, out = on_tty(
        ["vault", "put", str(tmp_path / "scan.bin"), *h],
        [
            ("Passphrase for owner's key:", "typo typo typo"),
            ("Passphrase for owner's key:", ""),
            ("Passphrase for owner's key:", GOOD),
        ],
    )
    assert code == 0, out
    assert "wrong passphrase; try again" in out and "empty passphrase; try again" in out
    code, out = on_tty(
        ["query", "SELECT COUNT(*) FROM t", *h], [("Passphrase for owner's key:", GOOD)]
    )
    assert code == 0 and "60" in out, out
    code, out = on_tty(
        ["person", "add", "bob", "--role", "researcher", "--as", "owner", *h],
        [
            ("Passphrase for owner's key:", GOOD),
            ("New passphrase for bob's key:", BOB),
            ("Repeat the passphrase:", BOB),
        ],
    )
    assert code == 0 and "added bob" in out, out
    code, out = on_tty(
        ["query", "SELECT COUNT(*) FROM t", "--researcher", "bob", *h],
        [("Passphrase for bob's key:", BOB)],
    )
    assert code == 0, out
    code, out = on_tty(
        ["table", "policy", "t", "--mode", "dp", "--total-epsilon", "1", "--as", "owner", *h],
        [("Publish these bounds", "y"), ("Passphrase for owner's key:", GOOD)],
    )
    assert code == 0 and "mode: dp" in out, out
    code, out = on_tty(
        ["user", "add", "rita", "--role", "researcher", "--as", "owner", *h],
        [("Passphrase for owner's key:", GOOD)],
    )
    assert code == 0 and "API token" in out, out
    code, out = on_tty(
        ["dicom", "reidentify", "TS0123456789ABCDEF0000", "--reason", "test", "--as", "owner", *h],
        [("Passphrase for owner's key:", GOOD)],
    )
    # unlocked and signed; the custodians want a second steward's or officer's signature
    assert code == 1 and "TESSERA_PASSPHRASE" not in out, out
    assert "this request has 1" in out, out
    code, out = on_tty(
        ["dicom", "reidentify", "TS0123456789ABCDEF0000", "--reason", "test", "--as", "bob", *h],
        [("Passphrase for bob's key:", BOB)],
    )
    assert code == 1 and "signatures of stewards or officers; this request has 0" in out, out


def test_init_then_put_elsewhere_finds_the_environment(home: Path, tmp_path: Path) -> None:
    """The README's sequence at a terminal: no --home, no $TESSERA_HOME, another folder."""
    (tmp_path / "scan.dcm").write_bytes(os.urandom(500))
    code, out = on_tty(
        ["vault", "put", "scan.dcm", "--name", "readme-scan"],
        [("Passphrase for owner's key:", GOOD)],
        cwd=tmp_path,
    )
    assert code == 0 and "stored readme-scan" in out, out
    done = plain(["vault", "ls", "--home", str(home)])
    assert "readme-scan" in done.stdout, done.stderr


def test_three_wrong_passphrases_fail(home: Path) -> None:
    code, out = on_tty(
        ["query", "SELECT COUNT(*) FROM t", "--as", "owner", "--home", str(home)],
        [
            ("Passphrase for owner's key:", "wrong one 1"),
            ("Passphrase for owner's key:", "wrong one 2"),
            ("Passphrase for owner's key:", "wrong one 3"),
        ],
    )
    assert code == 1 and "3 attempts" in out, out


def test_without_a_terminal_one_line_naming_the_variable(home: Path) -> None:
    h = ["--home", str(home)]
    dp = ["--mode", "dp", "--total-epsilon", "0.5", "--confirm-bounds"]
    for argv in (
        ["query", "SELECT COUNT(*) FROM t", "--as", "owner", *h],
        ["table", "policy", "t", *dp, "--as", "owner", *h],
        ["user", "add", "zed", "--role", "researcher", "--as", "owner", *h],
        ["dicom", "reidentify", "TS0123456789ABCDEF0000", "--reason", "test", "--as", "owner", *h],
    ):
        done = plain(argv)
        assert done.returncode == 1, (argv, done.stderr)
        assert "TESSERA_PASSPHRASE" in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_no_key_in_the_clear(home: Path) -> None:
    assert plain_keys(home) == []

"""After the demo's steps that make keys, nothing in their folders is a key in the clear.

The steps run as `make demo` runs them (through the installed `tessera demo`): the
vault (an environment: its founder's key, the nodes' CA and TLS keys) and the gateway
(users whose keys are encrypted under their tokens).  Then every file is scanned: no
person's key, no job-signing seed and no CA key is readable without its passphrase.
(The custodians step adds more people's keys of the same kind, made the same way;
`make test-slow` runs every step.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from keyscan import plain_keys

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).with_name("tessera")


def _demo(folder: Path, *steps: str) -> None:
    args = [a for s in steps for a in ("--step", s)]
    done = subprocess.run(
        [str(BIN), "demo", *args, "--dir", str(folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_demo_leaves_no_key_in_the_clear(tmp_path: Path) -> None:
    _demo(tmp_path / "one", "vault")
    _demo(tmp_path / "two", "gateway")
    keys = sorted((tmp_path / "one").rglob("keys/*.key"))
    assert "owner" in {k.stem for k in keys}
    assert list((tmp_path / "two").rglob("gateway/keys/rita.key"))
    for folder in (tmp_path / "one", tmp_path / "two"):
        assert plain_keys(folder) == []
    # the scan itself finds what it is there to find
    (tmp_path / "one" / "leak.seed").write_bytes(b"\x01" * 32)
    assert plain_keys(tmp_path / "one") == ["leak.seed: a raw 32-byte seed"]

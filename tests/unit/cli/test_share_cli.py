"""`tessera share` through the real entry point: round trip, damage, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tessera.cli.main import main

TESSERA = [sys.executable, "-m", "tessera.cli.main"]


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "scan.bin"
    path.write_bytes(os.urandom(300_000))
    return path


def _frags(out: Path) -> list[Path]:
    return sorted(out.glob("*.tfrag"))


def test_split_and_combine_via_subprocess(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "frags"
    done = subprocess.run(
        [
            *TESSERA,
            "share",
            "split",
            str(sample),
            "--threshold",
            "3",
            "--shares",
            "5",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["k"] == 3 and info["n"] == 5 and len(info["fragments"]) == 5
    frags = _frags(out)
    restored = tmp_path / "restored.bin"
    done = subprocess.run(
        [*TESSERA, "share", "combine", *map(str, frags[2:]), "--out", str(restored)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert restored.read_bytes() == sample.read_bytes()


@pytest.mark.parametrize("scheme", ["shamir", "ssms"])
def test_lost_and_corrupted_fragments(
    sample: Path, tmp_path: Path, scheme: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "frags"
    assert (
        main(
            [
                "share",
                "split",
                str(sample),
                "-k",
                "3",
                "-n",
                "5",
                "--out",
                str(out),
                "--scheme",
                scheme,
            ]
        )
        == 0
    )
    frags = _frags(out)
    frags[0].unlink()  # lost
    data = bytearray(frags[2].read_bytes())
    data[len(data) // 2] ^= 0x10
    frags[2].write_bytes(bytes(data))  # corrupted
    capsys.readouterr()
    restored = tmp_path / "r.bin"
    assert main(["share", "combine", *map(str, frags[1:]), "--out", str(restored), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert restored.read_bytes() == sample.read_bytes()
    assert [b["index"] for b in report["bad"]] == [3]
    assert report["bad"][0]["problem"].startswith("damaged data")


def test_refusals_leave_no_output(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "frags"
    assert main(["share", "split", str(sample), "-k", "3", "-n", "4", "--out", str(out)]) == 0
    frags = _frags(out)
    restored = tmp_path / "r.bin"
    capsys.readouterr()
    # Too few.
    assert main(["share", "combine", *map(str, frags[:2]), "--out", str(restored)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "need 3 valid fragments, have 2" in err
    # Truncated.
    cut = tmp_path / "cut.tfrag"
    cut.write_bytes(frags[0].read_bytes()[:-1000])
    assert main(["share", "combine", str(cut), *map(str, frags[1:3]), "--out", str(restored)]) == 1
    assert "truncated" in capsys.readouterr().err
    # Mixed objects.
    other = tmp_path / "other"
    assert main(["share", "split", str(sample), "-k", "2", "-n", "2", "--out", str(other)]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "share",
                "combine",
                str(frags[0]),
                *map(str, _frags(other)[:1]),
                "--out",
                str(restored),
            ]
        )
        == 1
    )
    assert "different objects" in capsys.readouterr().err
    # Damage beyond repair: the output must not exist, and no temporary is left.
    for offset, f in zip((-500, -700), frags[:2], strict=True):
        data = bytearray(f.read_bytes())
        data[offset] ^= 1
        f.write_bytes(bytes(data))
    assert main(["share", "combine", *map(str, frags), "--out", str(restored)]) == 1
    assert not restored.exists()
    assert not list(tmp_path.glob(".r.bin.*"))


def test_usage_errors_exit_2(sample: Path, tmp_path: Path) -> None:
    assert main(["share", "split", str(sample), "--out", str(tmp_path)]) == 2
    assert main(["share", "split", str(sample), "-k", "4", "-n", "3", "--out", str(tmp_path)]) == 2
    assert (
        main(
            [
                "share",
                "split",
                str(sample),
                "-k",
                "2",
                "-n",
                "3",
                "--out",
                str(tmp_path),
                "--scheme",
                "rot13",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "share",
                "split",
                str(tmp_path / "missing"),
                "-k",
                "2",
                "-n",
                "3",
                "--out",
                str(tmp_path),
            ]
        )
        == 1
    )


@pytest.mark.parametrize("workers", ["1", "3"])
def test_workers_option(sample: Path, tmp_path: Path, workers: str) -> None:
    out = tmp_path / "frags"
    split = ["share", "split", str(sample), "-k", "2", "-n", "3", "--out", str(out)]
    assert main([*split, "--workers", workers]) == 0
    back = tmp_path / "back.bin"
    assert (
        main(["share", "combine", *map(str, _frags(out)), "--out", str(back), "--workers", workers])
        == 0
    )
    assert back.read_bytes() == sample.read_bytes()
    assert main([*split, "--workers", "0"]) == 2


def test_inspect_shows_public_header(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "frags"
    assert main(["share", "split", str(sample), "-k", "2", "-n", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["share", "inspect", *map(str, _frags(out)), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["index"] for r in rows] == [1, 2, 3]
    assert rows[0]["padded_size"] >= 300_000


def test_existing_outputs_need_force(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "frags"
    split = ["share", "split", str(sample), "-k", "2", "-n", "3", "--out", str(out)]
    assert main(split) == 0
    frags = _frags(out)
    before = [f.read_bytes() for f in frags]
    capsys.readouterr()
    # A second split over the same fragment names is refused and changes nothing.
    assert main(split) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--force" in err
    assert [f.read_bytes() for f in frags] == before
    # combine --out onto an existing file: refused, the file is kept as it was.
    precious = tmp_path / "precious.txt"
    precious.write_bytes(b"the only copy of something else")
    assert main(["share", "combine", *map(str, frags), "--out", str(precious)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert precious.read_bytes() == b"the only copy of something else"
    assert not list(tmp_path.glob(".precious.txt.*"))
    # --force overwrites, atomically.
    assert main(["share", "combine", *map(str, frags), "--out", str(precious), "--force"]) == 0
    assert precious.read_bytes() == sample.read_bytes()
    assert main([*split, "--force"]) == 0
    assert [f.read_bytes() for f in frags] != before

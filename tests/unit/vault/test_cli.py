from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tessera.cli.main import main
from tessera.config import Environment
from tessera.keys.protect import is_encrypted
from tessera.workflows.vault import open_vault

from .kit import random_bytes


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TESSERA_PASSPHRASE", "unit test passphrase")
    monkeypatch.delenv("TESSERA_HOME", raising=False)
    folder = tmp_path / "env"
    assert main(["init", str(folder), "--nodes", "5", "--threshold", "3"]) == 0
    return folder


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 0) -> object:
    capsys.readouterr()
    assert main([*argv, "--json"]) == code
    return json.loads(capsys.readouterr().out)


def test_init_refuses_plain_key_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TESSERA_PASSPHRASE", raising=False)
    assert main(["init", str(tmp_path / "e")]) == 2
    assert "TESSERA_PASSPHRASE" in capsys.readouterr().err
    assert not (tmp_path / "e" / "tessera.toml").exists()


def test_encrypted_owner_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TESSERA_PASSPHRASE", "a long passphrase")
    doc = run_json(capsys, ["init", str(tmp_path / "e"), "--nodes", "3", "--threshold", "2"])
    assert isinstance(doc, dict) and doc["key_encrypted"] is True and doc["threshold"] == 2
    assert is_encrypted((tmp_path / "e" / "keys" / "owner.key").read_bytes())
    (tmp_path / "f").write_bytes(b"hello")
    home = ["--home", str(tmp_path / "e")]
    assert main(["vault", "put", str(tmp_path / "f"), *home]) == 0
    monkeypatch.setenv("TESSERA_PASSPHRASE", "wrong")
    assert main(["vault", "put", str(tmp_path / "f"), *home]) == 1
    assert "wrong passphrase" in capsys.readouterr().err
    monkeypatch.delenv("TESSERA_PASSPHRASE")
    assert main(["vault", "put", str(tmp_path / "f"), *home]) == 1
    assert "TESSERA_PASSPHRASE" in capsys.readouterr().err
    # Reading needs only the public key.
    assert main(["vault", "get", "f", "--out", str(tmp_path / "g"), *home]) == 0
    assert (tmp_path / "g").read_bytes() == b"hello"
    assert main(["init", str(tmp_path / "e"), "--unencrypted-key"]) == 1


def test_vault_commands(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = ["--home", str(home)]
    data = random_bytes(100_000)
    (tmp_path / "scan.dcm").write_bytes(data)
    put = run_json(capsys, ["vault", "put", str(tmp_path / "scan.dcm"), "--scheme", "ssms", *h])
    assert isinstance(put, dict) and put["status"] == "healthy"
    assert run_json(capsys, ["vault", "ls", *h]) == [
        {
            "name": "scan.dcm",
            "size": 100_000,
            "scheme": "ssms",
            "k": 3,
            "n": 5,
            "created": run_created(home),
            "generation": 0,
        }
    ]
    assert run_json(capsys, ["vault", "verify", *h]) == {
        "status": "healthy",
        "objects": [{"name": "scan.dcm", "status": "healthy", "problems": []}],
        "unreachable": [],
    }
    for node in (2, 4):
        for f in (home / "stores" / f"node-{node}" / "data").iterdir():
            f.unlink()
    doc = run_json(capsys, ["vault", "verify", "scan.dcm", *h], code=1)
    assert isinstance(doc, dict) and doc["status"] == "degraded"
    assert doc["objects"][0]["problems"] == [
        {"store": "2", "problem": "data fragment missing"},
        {"store": "4", "problem": "data fragment missing"},
    ]
    got = run_json(capsys, ["vault", "get", "scan.dcm", "--out", str(tmp_path / "o"), *h])
    assert isinstance(got, dict) and {m["store"] for m in got["missing"]} == {"2", "4"}
    assert (tmp_path / "o").read_bytes() == data
    assert main(["vault", "repair", *h]) == 0
    assert main(["vault", "verify", *h]) == 0
    assert main(["vault", "refresh", *h]) == 0
    assert main(["vault", "get", "scan.dcm", "--out", str(tmp_path / "o2"), *h]) == 0
    assert (tmp_path / "o2").read_bytes() == data
    for node in (1, 2, 3):
        for f in (home / "stores" / f"node-{node}" / "data").iterdir():
            f.unlink()
    assert main(["vault", "verify", *h]) == 2
    assert main(["vault", "get", "scan.dcm", "--out", str(tmp_path / "o3"), *h]) == 1
    assert not (tmp_path / "o3").exists()
    assert main(["vault", "rm", "scan.dcm", *h]) == 0
    assert main(["vault", "rm", "scan.dcm", *h]) == 0
    assert run_json(capsys, ["vault", "ls", *h]) == []


def run_created(home: Path) -> str:
    return open_vault(Environment.load(home)).ls()[0].created


def test_errors_are_one_line(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = ["--home", str(home)]
    assert main(["vault", "get", "nope", "--out", str(tmp_path / "x"), *h]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no file named 'nope'" in err
    assert main(["vault", "put", str(tmp_path / "missing"), *h]) == 2
    (tmp_path / "f").write_bytes(b"x")
    assert main(["vault", "put", str(tmp_path / "f"), "--scheme", "xor", *h]) == 2
    assert main(["vault", "ls", "--home", str(tmp_path / "none")]) == 1
    assert "tessera init" in capsys.readouterr().err


def test_verify_exits_2_when_too_few_stores_answer(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100)
    assert main(["vault", "put", str(tmp_path / "f"), "--home", str(home)]) == 0
    config = home / "tessera.toml"
    text = config.read_text()
    for i in (1, 2, 3):
        text = text.replace((home / "stores" / f"node-{i}").as_uri(), "nosuchprotocol://gone")
    config.write_text(text)
    assert main(["vault", "verify", "--home", str(home)]) == 2
    assert "only 2 of 5 stores reachable" in capsys.readouterr().err


def test_real_entry_point(home: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("tessera")
    (tmp_path / "f").write_bytes(b"through the console script")
    env = {**os.environ, "TESSERA_HOME": str(home)}
    subprocess.run([exe, "vault", "put", str(tmp_path / "f"), "--name", "n"], check=True, env=env)
    done = subprocess.run(
        [exe, "vault", "ls", "--json"], check=True, env=env, capture_output=True, text=True
    )
    assert [e["name"] for e in json.loads(done.stdout)] == ["n"]
    subprocess.run([exe, "vault", "get", "n", "--out", str(tmp_path / "g")], check=True, env=env)
    assert (tmp_path / "g").read_bytes() == b"through the console script"

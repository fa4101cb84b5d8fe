"""DICOM use cases: de-identify a batch, run the receiving node, re-identify.

The dicom package takes its storage target and identity table as Protocols; this module
chooses the implementations.  Today both are local folders under the environment
(``HOME/dicom/``); when the vault's API settles, ``_sink`` and ``_identities`` return
vault-backed objects (see docs/dicom.md, "Wiring the vault").
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessera.dicom import (
    BatchSettings,
    FolderIdentityStore,
    FolderSink,
    IdentityStore,
    ObjectSink,
    Outcome,
    Profile,
    Pseudonymizer,
    discover,
    run_batch,
)
from tessera.dicom.node import Receiver, start_scp
from tessera.errors import ConfigError, InputError, NotFoundError

__all__ = [
    "NodeHandle",
    "deidentify_paths",
    "load_key",
    "reidentify",
    "start_node",
]


def _dicom_home(home: Path) -> Path:
    return home / "dicom"


def load_key(home: Path, key_file: Path | None = None) -> bytes:
    """The project key: ``key_file`` (hex or raw bytes), else HOME/dicom/project.key.

    The default key is created (32 random bytes, mode 0600) on first use.  Sites that
    must agree on pseudonyms share one key file.
    """
    if key_file is None:
        key_file = _dicom_home(home) / "project.key"
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    try:
        raw = key_file.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"no key file at {key_file}") from None
    if key_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO) and os.name == "posix":
        raise ConfigError(f"key file {key_file} is readable by others; chmod 600 it")
    text = raw.strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = raw
    if len(key) < 16:
        raise InputError(f"key file {key_file} holds fewer than 16 bytes of key")
    return key


def _sink(out: Path) -> ObjectSink:
    return FolderSink(out)


def _identities(home: Path) -> IdentityStore:
    return FolderIdentityStore(_dicom_home(home) / "identities")


def deidentify_paths(
    source: Path,
    out: Path,
    *,
    home: Path,
    options: Sequence[str] = (),
    key_file: Path | None = None,
    keep_burned_in: bool = False,
    workers: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """De-identify a file or a folder tree into ``out``; the JSON report document."""
    profile = Profile.from_codes(options)
    paths = discover(source)
    settings = BatchSettings.of(profile, load_key(home, key_file), keep_burned_in=keep_burned_in)
    if on_start is not None:
        on_start(len(paths))
    entries = run_batch(
        paths, settings, _sink(out), _identities(home), workers=workers, on_done=on_done
    )
    counts = {s: 0 for s in ("deidentified", "quarantined", "failed")}
    for entry in entries:
        counts[entry["status"]] += 1
    return {
        "profile": {"options": [o.value for o in profile.ordered_options()]},
        "summary": counts,
        "files": entries,
    }


@dataclass
class NodeHandle:
    """A running node: its address and a way to stop it."""

    host: str
    port: int
    ae_title: str
    receiver: Receiver
    server: Any

    def stop(self) -> None:
        """Stop listening and close open associations."""
        self.server.shutdown()


def start_node(
    *,
    home: Path,
    out: Path,
    host: str = "127.0.0.1",
    port: int = 11112,
    ae_title: str = "TESSERA",
    options: Sequence[str] = (),
    key_file: Path | None = None,
    keep_burned_in: bool = False,
    on_outcome: Callable[[Outcome, str | None], None] | None = None,
) -> NodeHandle:
    """Start the C-STORE SCP that de-identifies into ``out`` (port 0: any free port)."""
    receiver = Receiver(
        Profile.from_codes(options),
        Pseudonymizer(load_key(home, key_file)),
        _sink(out),
        _identities(home),
        keep_burned_in=keep_burned_in,
        on_outcome=on_outcome,
    )
    server = start_scp(receiver, host, port, ae_title)
    bound_host, bound_port = server.server_address[:2]
    return NodeHandle(str(bound_host), int(bound_port), ae_title, receiver, server)


def reidentify(home: Path, pseudonym: str) -> dict[str, str]:
    """The identity behind a patient pseudonym, from the local identity table."""
    return _identities(home).get(pseudonym.strip())

"""DICOM use cases: de-identify a batch, run the receiving node, re-identify.

The dicom package takes its storage target and identity table as Protocols; this module
chooses the implementations.  In an environment made by ``tessera init`` (one with a
vault), the pseudonym-to-identity table lives in the vault, secret-shared k-of-n across
the custodians' stores, and re-identification reads it back (k stores must answer) and
appends an audit record; ``tessera dicom serve --vault`` stores what it receives there
too.  Without an environment both fall back to folders under ``HOME/dicom/``.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from tessera.config import Environment
from tessera.core.audit_sink import Action, AuditEvent
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
from tessera.errors import ConfigError, InputError, NotFoundError, TesseraError, UsageError
from tessera.vault import Vault
from tessera.workflows import audit
from tessera.workflows.vault import open_vault, vault_settings

__all__ = [
    "NodeHandle",
    "VaultIdentityStore",
    "VaultSink",
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


IDENTITY_PREFIX = "dicom-identity/"
OBJECT_PREFIX = "dicom/"


class VaultSink:
    """De-identified objects into the vault under ``dicom/<pseudonym>/<uid>.dcm``."""

    def __init__(self, vault: Vault, scheme: str = "shamir") -> None:
        self.vault = vault
        self.scheme = scheme

    def put(self, name: str, data: bytes) -> str:
        """Split ``data`` across the stores; return ``vault:<name>``."""
        result = self.vault.put(BytesIO(data), len(data), OBJECT_PREFIX + name, scheme=self.scheme)
        return f"vault:{result.name}"


class VaultIdentityStore:
    """The pseudonym -> identity table as one small vault object per patient."""

    def __init__(self, vault: Vault, scheme: str = "shamir") -> None:
        self.vault = vault
        self.scheme = scheme
        self._known: set[str] = set()

    def _name(self, pseudonym: str) -> str:
        if not (pseudonym.startswith("TS") and len(pseudonym) == 22 and pseudonym.isalnum()):
            raise UsageError("not a Tessera patient pseudonym")
        return f"{IDENTITY_PREFIX}{pseudonym}"

    def put(self, pseudonym: str, identity: Mapping[str, str]) -> None:
        """Record the identity once (the first recorded for a pseudonym stays)."""
        name = self._name(pseudonym)
        if pseudonym in self._known:
            return
        try:
            self.vault.lookup(name)
        except NotFoundError:
            body = json.dumps(dict(identity), sort_keys=True).encode()
            self.vault.put(BytesIO(body), len(body), name, scheme=self.scheme)
        self._known.add(pseudonym)

    def get(self, pseudonym: str) -> dict[str, str]:
        """Reconstruct the identity from k stores (NotFoundError if none recorded)."""
        name = self._name(pseudonym)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "identity.json"
            self.vault.get(name, out)
            try:
                data = json.loads(out.read_text(encoding="utf-8"))
            except ValueError:
                raise InputError("the identity record is damaged") from None
        return {str(k): str(v) for k, v in data.items()}


def _environment(home: Path) -> Environment | None:
    if not (home / "tessera.toml").exists():
        return None
    env = Environment.load(home)
    return env if "vault" in env.extra else None


def _vault(home: Path, *, write: bool) -> tuple[Vault, str] | None:
    env = _environment(home)
    if env is None:
        return None
    return open_vault(env, write=write), str(vault_settings(env)["scheme"])


def _sink(out: Path) -> ObjectSink:
    return FolderSink(out)


def _identities(home: Path) -> IdentityStore:
    opened = _vault(home, write=True)
    if opened is not None:
        return VaultIdentityStore(*opened)
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
    to_vault: bool = False,
    on_outcome: Callable[[Outcome, str | None], None] | None = None,
) -> NodeHandle:
    """Start the C-STORE SCP that de-identifies into ``out`` or the vault (port 0: any)."""
    sink: ObjectSink = _sink(out)
    if to_vault:
        opened = _vault(home, write=True)
        if opened is None:
            raise ConfigError(f"no environment with a vault at {home} (run 'tessera init')")
        sink = VaultSink(*opened)
    receiver = Receiver(
        Profile.from_codes(options),
        Pseudonymizer(load_key(home, key_file)),
        sink,
        _identities(home),
        keep_burned_in=keep_burned_in,
        on_outcome=on_outcome,
    )
    server = start_scp(receiver, host, port, ae_title)
    bound_host, bound_port = server.server_address[:2]
    return NodeHandle(str(bound_host), int(bound_port), ae_title, receiver, server)


def reidentify(home: Path, pseudonym: str, *, user: str = "") -> dict[str, str]:
    """The identity behind a patient pseudonym.

    In an environment: read from the vault (k of the n custodians' stores must answer)
    and recorded in the audit log, whether it succeeds or not.  Otherwise from the local
    folder table (no quorum, no audit: the embedded fallback).
    """
    pseudonym = pseudonym.strip()
    opened = _vault(home, write=False)
    if opened is None:
        return FolderIdentityStore(_dicom_home(home) / "identities").get(pseudonym)
    store = VaultIdentityStore(*opened)
    outcome = "success"
    try:
        return store.get(pseudonym)
    except NotFoundError:
        outcome = "not_found"
        raise
    except TesseraError:
        outcome = "failure"
        raise
    finally:
        event = AuditEvent(
            action=Action.DICOM_REIDENTIFY,
            outcome=outcome,
            user=user or os.environ.get("USER", ""),
            patient=pseudonym,
            entity=IDENTITY_PREFIX + pseudonym,
            entity_type="identity",
            purpose="re-identification",
        )
        audit.record(home, [event])

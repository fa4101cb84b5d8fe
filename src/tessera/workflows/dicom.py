"""DICOM use cases: de-identify a batch, run the receiving node, re-identify.

The dicom package takes its storage target and identity table as Protocols; this module
chooses the implementations.  In an environment made by ``tessera init`` (one with a
vault), the pseudonym-to-identity table lives in the vault, secret-shared k-of-n across
the custodians' stores, and re-identification reads it back (k stores must answer) and
appends an audit record; ``tessera dicom serve --vault`` stores what it receives there
too, and with ``--keep-original`` (or ``[dicom] keep_original = true``) each instance as
received, secret-shared under ``dicom-original/<pseudonym>/<new uid>.dcm``; fetching
one back (:func:`fetch_original`) is audited like a re-identification.  Without an
environment both fall back to folders under ``HOME/dicom/``; originals are kept only in
the vault.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from tessera.config import Environment, missing_environment
from tessera.core.audit_sink import Action, AuditEvent, AuditSink
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
from tessera.errors import ConfigError, InputError, NotFoundError, UsageError
from tessera.vault import NameTakenError, Vault
from tessera.workflows import audit
from tessera.workflows.vault import open_vault, vault_settings

__all__ = [
    "NodeHandle",
    "VaultIdentityStore",
    "VaultSink",
    "deidentify_paths",
    "fetch_original",
    "keep_original_setting",
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
ORIGINAL_PREFIX = "dicom-original/"
_PSEUDONYM = re.compile(r"TS[0-9A-F]{20}")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class VaultSink:
    """Objects into the vault under ``<prefix><pseudonym>/<uid>.dcm``.

    The prefix is ``dicom/`` for de-identified copies, ``dicom-original/`` for originals.
    """

    def __init__(self, vault: Vault, scheme: str = "shamir", prefix: str = OBJECT_PREFIX) -> None:
        self.vault = vault
        self.scheme = scheme
        self.prefix = prefix

    def put(self, name: str, data: bytes) -> str:
        """Split ``data`` across the stores; return ``vault:<name>``."""
        # a modality re-sending an instance yields the same de-identified bytes: replace
        result = self.vault.put(
            BytesIO(data), len(data), self.prefix + name, scheme=self.scheme, replace=True
        )
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
            with suppress(NameTakenError):  # recorded meanwhile: the first stays
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


def keep_original_setting(home: Path) -> bool:
    """``[dicom] keep_original`` from HOME/tessera.toml (False when unset or no file)."""
    if not (home / "tessera.toml").exists():
        return False
    env = Environment.load(home)
    table = env.extra.get("dicom", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{env.path}: [dicom] must be a table")
    value = table.get("keep_original", False)
    if not isinstance(value, bool):
        raise ConfigError(f"{env.path}: [dicom] keep_original must be true or false")
    return value


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


def _gateway_sink(home: Path) -> AuditSink | None:
    """The gateway log of the environment at ``home`` (None outside an environment)."""
    if not (home / "tessera.toml").is_file():
        return None
    return audit.gateway_log(home)


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
    keep_original: bool | None = None,
    on_outcome: Callable[[Outcome, str | None], None] | None = None,
    audit_sink: AuditSink | None = None,
) -> NodeHandle:
    """Start the C-STORE SCP that de-identifies into ``out`` or the vault (port 0: any).

    Each received instance is recorded as a ``dicom.receive`` event in ``audit_sink``
    (None: the gateway log when ``home`` holds an environment, else nothing is recorded).

    ``keep_original`` (None: ``[dicom] keep_original`` from tessera.toml) also keeps each
    received instance as it arrived, secret-shared in the vault; it requires ``to_vault``
    (originals are never written to a plain folder).
    """
    if keep_original is None:
        keep_original = keep_original_setting(home)
    if keep_original and not to_vault:
        raise ConfigError(
            "originals are kept only secret-shared in the vault: serve with --vault "
            "(or --no-keep-original)"
        )
    sink: ObjectSink = _sink(out)
    originals: ObjectSink | None = None
    if to_vault:
        opened = _vault(home, write=True)
        if opened is None:
            raise missing_environment(home)
        sink = VaultSink(*opened)
        if keep_original:
            originals = VaultSink(*opened, prefix=ORIGINAL_PREFIX)
    receiver = Receiver(
        Profile.from_codes(options),
        Pseudonymizer(load_key(home, key_file)),
        sink,
        _identities(home),
        keep_burned_in=keep_burned_in,
        originals=originals,
        on_outcome=on_outcome,
        audit=audit_sink if audit_sink is not None else _gateway_sink(home),
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
    with _audited_reidentify(
        home,
        user=user or os.environ.get("USER", ""),
        patient=pseudonym,
        entity=IDENTITY_PREFIX + pseudonym,
        entity_type="identity",
        purpose="re-identification",
    ):
        return store.get(pseudonym)


@contextmanager
def _audited_reidentify(
    home: Path, *, user: str, patient: str, entity: str, entity_type: str, purpose: str
) -> Iterator[None]:
    """Record one DICOM_REIDENTIFY event for the enclosed read, whatever its outcome."""
    outcome = "failure"
    try:
        yield
        outcome = "success"
    except NotFoundError:
        outcome = "not_found"
        raise
    finally:
        event = AuditEvent(
            action=Action.DICOM_REIDENTIFY,
            outcome=outcome,
            user=user,
            patient=patient,
            entity=entity,
            entity_type=entity_type,
            purpose=purpose,
        )
        audit.record(home, [event])


def _parse_ref(ref: str) -> tuple[str, str]:
    """(pseudonym, new SOP Instance UID) named by ``ref``, either may be empty."""
    ref = ref.strip()
    for prefix in (ORIGINAL_PREFIX, OBJECT_PREFIX):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    ref = ref.removesuffix(".dcm")
    pseudonym, _, uid = ref.rpartition("/") if "/" in ref else ("", "", ref)
    if not pseudonym and _PSEUDONYM.fullmatch(uid):
        pseudonym, uid = uid, ""
    if pseudonym and not _PSEUDONYM.fullmatch(pseudonym):
        raise UsageError("not a Tessera patient pseudonym")
    if uid and not (len(uid) <= 64 and _UID.fullmatch(uid)):
        raise UsageError("not a de-identified SOP Instance UID (digits and dots)")
    if not pseudonym and not uid:
        raise UsageError("give a de-identified SOP Instance UID or a patient pseudonym")
    return pseudonym, uid


def _original_pattern(ref: str) -> str:
    """``dicom-original/<pseudonym or *>/<uid or *>.dcm``: what a reference asked for."""
    pseudonym, uid = _parse_ref(ref)
    return f"{ORIGINAL_PREFIX}{pseudonym or '*'}/{uid or '*'}.dcm"


def _original_names(names: Sequence[str], ref: str) -> list[str]:
    """The ``dicom-original/`` names that ``ref`` designates (see :func:`fetch_original`)."""
    pseudonym, uid = _parse_ref(ref)
    found = []
    for name in names:
        if not name.startswith(ORIGINAL_PREFIX):
            continue
        owner, _, file = name[len(ORIGINAL_PREFIX) :].partition("/")
        if pseudonym and owner != pseudonym:
            continue
        if uid and file != f"{uid}.dcm":
            continue
        found.append(name)
    return sorted(found)


def fetch_original(home: Path, ref: str, out: Path, *, user: str = "") -> list[dict[str, str]]:
    """Restore kept originals from the vault into ``out``; audited like :func:`reidentify`.

    ``ref`` is a de-identified SOP Instance UID, a patient pseudonym, or the vault name
    of the de-identified copy (``dicom/<pseudonym>/<uid>.dcm``) or of the original.  One
    match is written to the file ``out`` (or into it, as ``<uid>.dcm``, when ``out`` is an
    existing folder); several (a pseudonym with many instances) go into the folder
    ``out`` as ``<uid>.dcm``.  Every retrieval (k stores must answer) appends a
    ``dicom.reidentify`` audit event naming the vault entry, whether it succeeds or not.
    """
    opened = _vault(home, write=False)
    if opened is None:
        raise ConfigError(f"no environment with a vault at {home}: originals are kept only there")
    vault = opened[0]
    who = user or os.environ.get("USER", "")
    pattern = _original_pattern(ref)  # refuses a malformed reference first
    names = _original_names([m.name for m in vault.ls()], ref)
    if not names:
        audit.record(
            home,
            [
                AuditEvent(
                    action=Action.DICOM_REIDENTIFY,
                    outcome="not_found",
                    user=who,
                    patient=pattern.split("/")[1].strip("*"),
                    entity=pattern,
                    entity_type="dicom-original",
                    purpose="re-identification (original instance)",
                )
            ],
        )
        raise NotFoundError("no original kept in the vault for this reference")
    many = len(names) > 1 or out.is_dir()
    if many:
        out.mkdir(parents=True, exist_ok=True)
    fetched: list[dict[str, str]] = []
    for name in names:
        pseudonym, _, file = name[len(ORIGINAL_PREFIX) :].partition("/")
        target = out / file if many else out
        with _audited_reidentify(
            home,
            user=who,
            patient=pseudonym,
            entity=name,
            entity_type="dicom-original",
            purpose="re-identification (original instance)",
        ):
            vault.get(name, target)
        fetched.append({"name": name, "pseudonym": pseudonym, "path": str(target)})
    return fetched

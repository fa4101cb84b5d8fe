"""DICOM use cases: de-identify a batch, run the receiving node, re-identify.

The dicom package takes its storage target and identity table as Protocols; this module
chooses the implementations.  In an environment made by ``tessera init`` (one with a
vault), the pseudonym-to-identity table lives in the vault as one *escrowed* object per
patient (``dicom-identity/<pseudonym>``): encrypted under a fresh data key whose shares
only the custodian nodes hold (:mod:`tessera.workflows.escrow`), so the vault alone
yields ciphertext.  ``tessera dicom serve --vault`` stores what it receives there too,
and with ``--keep-original`` (or ``[dicom] keep_original = true``) each instance as
received, escrowed the same way under ``dicom-original/<pseudonym>/<new uid>.dcm``.
Reading either back needs a request signed by a quorum of people, checked by every
custodian (:mod:`tessera.workflows.reidentify`); each attempt is audited here too
(:func:`_audited_reidentify`).  Without an environment both fall back to folders under
``HOME/dicom/`` (:func:`reidentify`); originals are kept only in the vault.
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
from tessera.errors import (
    ConfigError,
    InputError,
    IntegrityError,
    NotFoundError,
    PolicyError,
    UsageError,
)
from tessera.vault import NameTakenError, Vault
from tessera.workflows import audit
from tessera.workflows.escrow import Depositor
from tessera.workflows.vault import open_vault, vault_settings

__all__ = [
    "IDENTITY_PREFIX",
    "ORIGINAL_PREFIX",
    "PSEUDONYM_FORM",
    "NodeHandle",
    "VaultIdentityStore",
    "VaultSink",
    "deidentify_paths",
    "identity_pseudonym",
    "keep_original_setting",
    "load_key",
    "matches_original",
    "original_names",
    "parse_identity",
    "read_object",
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
PSEUDONYM_FORM = _PSEUDONYM
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def read_object(vault: Vault, name: str) -> bytes:
    """The bytes of vault object ``name`` (k stores must answer; NotFoundError if absent)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "object"
        vault.get(name, out)
        return out.read_bytes()


class VaultSink:
    """Objects into the vault under ``<prefix><pseudonym>/<uid>.dcm``.

    The prefix is ``dicom/`` for de-identified copies, ``dicom-original/`` for originals.
    Originals are escrowed (``escrow``, required for them): sealed under a fresh key
    whose shares the custodians hold, and the first one kept for a name stays.
    """

    def __init__(
        self,
        vault: Vault,
        scheme: str = "shamir",
        prefix: str = OBJECT_PREFIX,
        escrow: Depositor | None = None,
    ) -> None:
        if prefix == ORIGINAL_PREFIX and escrow is None:
            raise ConfigError("originals are kept only escrowed (sealed, key with the custodians)")
        self.vault = vault
        self.scheme = scheme
        self.prefix = prefix
        self.escrow = escrow

    def put(self, name: str, data: bytes) -> str:
        """Split ``data`` (sealed first when escrowed) across the stores; ``vault:<name>``."""
        full = self.prefix + name
        if self.escrow is None:
            # a modality re-sending an instance yields the same de-identified bytes: replace
            result = self.vault.put(
                BytesIO(data), len(data), full, scheme=self.scheme, replace=True
            )
            return f"vault:{result.name}"
        try:
            self.vault.lookup(full)
        except NotFoundError:
            envelope = self.escrow.seal(full, data)
            with suppress(NameTakenError):  # kept meanwhile: the first stays
                self.vault.put(BytesIO(envelope), len(envelope), full, scheme=self.scheme)
        return f"vault:{full}"


class VaultIdentityStore:
    """The pseudonym -> identity table as one small escrowed vault object per patient.

    :meth:`put` seals the record (its key's shares go to the custodians); :meth:`get`
    refuses: reading it back needs a quorum of people (:mod:`tessera.workflows.reidentify`).
    """

    def __init__(self, vault: Vault, escrow: Depositor, scheme: str = "shamir") -> None:
        self.vault = vault
        self.escrow = escrow
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
            envelope = self.escrow.seal(name, body)
            with suppress(NameTakenError):  # recorded meanwhile: the first stays
                self.vault.put(BytesIO(envelope), len(envelope), name, scheme=self.scheme)
        self._known.add(pseudonym)

    def get(self, pseudonym: str) -> dict[str, str]:
        """Refused: the record is escrowed (see :mod:`tessera.workflows.reidentify`)."""
        self._name(pseudonym)
        raise PolicyError(_QUORUM_HINT)


_QUORUM_HINT = (
    "identities are escrowed with the custodians: re-identify with a request signed by "
    "a quorum of stewards or officers (tessera dicom reidentify PSEUDONYM --reason TEXT)"
)


def identity_pseudonym(ref: str) -> str:
    """The pseudonym of identity object ``dicom-identity/<pseudonym>``; UsageError else."""
    pseudonym = ref.removeprefix(IDENTITY_PREFIX)
    if not ref.startswith(IDENTITY_PREFIX) or not _PSEUDONYM.fullmatch(pseudonym):
        raise UsageError("not an identity object (dicom-identity/<pseudonym>)")
    return pseudonym


def parse_identity(data: bytes) -> dict[str, str]:
    """An identity record's fields (InputError if damaged; the message holds none)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InputError("the identity record is damaged") from None
    if not isinstance(doc, dict):
        raise InputError("the identity record is damaged")
    return {str(k): str(v) for k, v in doc.items()}


def _environment(home: Path) -> Environment | None:
    if not (home / "tessera.toml").exists():
        return None
    env = Environment.load(home)
    return env if "vault" in env.extra else None


def _vault(home: Path, *, write: bool) -> tuple[Environment, Vault, str] | None:
    env = _environment(home)
    if env is None:
        return None
    return env, open_vault(env, write=write), str(vault_settings(env)["scheme"])


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


def _identities(home: Path) -> tuple[IdentityStore, Depositor | None]:
    """The identity table: escrowed in the vault (with its depositor, to close), or the
    local folder outside an environment."""
    opened = _vault(home, write=True)
    if opened is None:
        return FolderIdentityStore(_dicom_home(home) / "identities"), None
    env, vault, scheme = opened
    depositor = Depositor(env)
    return VaultIdentityStore(vault, depositor, scheme), depositor


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
    identities, depositor = _identities(home)
    try:
        entries = run_batch(
            paths, settings, _sink(out), identities, workers=workers, on_done=on_done
        )
    finally:
        if depositor is not None:
            depositor.close()
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
    escrow: Depositor | None = None

    def stop(self) -> None:
        """Stop listening and close open associations (and the custodian connections)."""
        self.server.shutdown()
        if self.escrow is not None:
            self.escrow.close()


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
    received instance as it arrived, escrowed in the vault (sealed; the key's shares on the
    custodians); it requires ``to_vault`` (originals are never written to a plain folder).
    """
    if keep_original is None:
        keep_original = keep_original_setting(home)
    if keep_original and not to_vault:
        raise ConfigError(
            "originals are kept only secret-shared in the vault: serve with --vault "
            "(or --no-keep-original)"
        )
    profile, pseudo = Profile.from_codes(options), Pseudonymizer(load_key(home, key_file))
    sink: ObjectSink = _sink(out)
    if to_vault:
        opened = _vault(home, write=True)
        if opened is None:
            raise missing_environment(home)
        sink = VaultSink(opened[1], opened[2])
    identities, depositor = _identities(home)
    try:
        originals = None
        if keep_original and isinstance(sink, VaultSink):  # with --vault (checked above)
            originals = VaultSink(sink.vault, sink.scheme, ORIGINAL_PREFIX, depositor)
        receiver = Receiver(
            profile,
            pseudo,
            sink,
            identities,
            keep_burned_in=keep_burned_in,
            originals=originals,
            on_outcome=on_outcome,
            audit=audit_sink if audit_sink is not None else _gateway_sink(home),
        )
        server = start_scp(receiver, host, port, ae_title)
    except BaseException:
        if depositor is not None:
            depositor.close()
        raise
    bound_host, bound_port = server.server_address[:2]
    return NodeHandle(str(bound_host), int(bound_port), ae_title, receiver, server, depositor)


def reidentify(home: Path, pseudonym: str, *, user: str = "") -> dict[str, str]:
    """The identity behind a patient pseudonym, from the local folder table (no quorum,
    no audit: the embedded fallback outside an environment).

    In an environment the record is escrowed: PolicyError, pointing to
    :func:`tessera.workflows.reidentify.run_reidentify` (a request signed by a quorum).
    """
    del user  # kept for callers of the folder fallback
    if _environment(home) is not None:
        raise PolicyError(_QUORUM_HINT)
    return FolderIdentityStore(_dicom_home(home) / "identities").get(pseudonym.strip())


def _outcome_of(exc: BaseException) -> str:
    if isinstance(exc, NotFoundError):
        return "not_found"
    if isinstance(exc, PolicyError | IntegrityError):
        return "denied"
    return "failure"


@contextmanager
def _audited_reidentify(
    home: Path,
    *,
    user: str,
    patient: str,
    entity: str,
    entity_type: str,
    purpose: str,
    detail: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[None]:
    """Record one DICOM_REIDENTIFY event for the enclosed read, whatever its outcome
    (``detail``: the request's signers, reason...; never an identity)."""
    outcome = "failure"
    try:
        yield
        outcome = "success"
    except BaseException as exc:
        outcome = _outcome_of(exc)
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
            detail=dict(detail or {}),
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


def original_names(home: Path, ref: str, *, user: str = "") -> list[str]:
    """The vault names of the kept originals ``ref`` designates (sorted).

    ``ref`` is a de-identified SOP Instance UID, a patient pseudonym, or the vault name
    of the de-identified copy (``dicom/<pseudonym>/<uid>.dcm``) or of the original.  A
    reference that matches nothing is audited as a ``not_found`` ``dicom.reidentify``
    event and raises NotFoundError; ConfigError outside an environment with a vault.
    """
    opened = _vault(home, write=False)
    if opened is None:
        raise ConfigError(f"no environment with a vault at {home}: originals are kept only there")
    pattern = _original_pattern(ref)  # refuses a malformed reference first
    names = _original_names([m.name for m in opened[1].ls()], ref)
    if names:
        return names
    event = AuditEvent(
        action=Action.DICOM_REIDENTIFY,
        outcome="not_found",
        user=user or os.environ.get("USER", ""),
        patient=pattern.split("/")[1].strip("*"),
        entity=pattern,
        entity_type="dicom-original",
        purpose="re-identification (original instance)",
    )
    audit.record(home, [event])
    raise NotFoundError("no original kept in the vault for this reference")


def matches_original(name: str, ref: str) -> bool:
    """Whether vault name ``name`` is a kept original that ``ref`` designates."""
    return _original_names([name], ref) == [name]

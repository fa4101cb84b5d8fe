"""Escrowed objects: vault ciphertext whose data key only a quorum of people releases.

Re-identifying objects (the pseudonym -> identity records, kept DICOM originals) are not
stored in the vault as they are.  Each is encrypted under a fresh AES-256-GCM data key
(:func:`seal`); the ciphertext envelope goes to the vault, and the data key is
Shamir-shared over the prime field GF(2^521 - 1) with threshold ``t + 1`` of the ``n``
custodians (``t = env.mpc_threshold``).  Each custodian gets one share, *deposited* on
its node (``PUT /v1/escrow``, mutual TLS) and bound to the object's vault name and the
SHA-256 digest of its envelope.  The vault alone (the environment folder, k stores)
therefore yields ciphertext only.

A custodian releases its shares (``POST /v1/escrow/release``, body ``{"request": ...,
"run": ...}``) only for a re-identification request (:class:`ReidentifyRequest`, a
signed document under :data:`REIDENTIFY_CONTEXT`) that, checked on the node against its
own pinned roster:

* is signed by at least ``roster.reidentify_quorum`` (default 2) distinct stewards or
  officers (verified signatures only; researchers and strangers do not count), and by
  the person it names as ``requested_by``;
* gives a non-empty reason;
* was issued at most 7 days ago (and at most 5 minutes in the future);
* carries a nonce this custodian never released for (each approved request releases
  once; refused requests do not use up their nonce, so one can be co-signed later);
* comes with a *run document* (:mod:`tessera.workflows.escrow_run`) signed by the
  requester at most 5 minutes ago, naming a one-time receiver key: every share is
  released sealed to that key, never in the clear, so a custodian replaying the request
  to the others collects ciphertexts only.

Every release and every refusal is an ``dicom.reidentify`` event in the custodian's own
audit log (refs, verified signers, reason; never a share or an identity).

State on the node: ``escrow.sqlite3`` in its folder (``deposits``: name, digest, share;
``nonces``: the requests it released for).  A deposit never replaces another: the
same (name, digest) with another share is refused; a second digest for a name (a retry
after a failed vault write) is kept next to the first (at most
:data:`MAX_DEPOSITS_PER_NAME`), and the reader picks the share whose digest matches
the vault object it read.

Client side: :class:`Depositor` seals and deposits (``tessera.workflows.dicom`` uses it
for identities and originals); :mod:`tessera.workflows.reidentify` asks for the shares
and opens the objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tessera.config import Environment
from tessera.core.audit_sink import Action, AuditEvent, AuditSink
from tessera.core.prime import InconsistentSharesError, reconstruct_robust, share
from tessera.core.rng import Drbg
from tessera.errors import (
    ConfigError,
    InputError,
    InsufficientSharesError,
    IntegrityError,
    PolicyError,
    ReplayError,
    StorageUnavailableError,
    TesseraError,
)
from tessera.keys.documents import SignedDocument, verified_signers
from tessera.keys.ephemeral import seal_to
from tessera.keys.people import PRIVILEGED, Roster, valid_name
from tessera.workflows.escrow_run import RUN_CONTEXT, admit_run, share_label
from tessera.workflows.nodes import NodeClient, _raise_refusals, each_node, ensure_nodes

__all__ = [
    "ESCROW_MAGIC",
    "KEY_PRIME",
    "MAX_AGE_S",
    "REIDENTIFY_CONTEXT",
    "REQUEST_FORMAT",
    "RUN_CONTEXT",
    "Depositor",
    "Escrow",
    "ReidentifyRequest",
    "Sealed",
    "admit_request",
    "approvers",
    "combine_key",
    "envelope_digest",
    "is_sealed",
    "open_sealed",
    "open_with_shares",
    "seal",
]

REIDENTIFY_CONTEXT = b"tessera-reidentify-v1"
REQUEST_FORMAT = "tessera-reidentify"
ESCROW_MAGIC = b"TSESCROW"
ESCROW_VERSION = 1
KEY_PRIME = 2**521 - 1  # a Mersenne prime above every 256-bit key
MAX_AGE_S = 7 * 86400
FUTURE_S = 300
MAX_REFS = 1000
MAX_DEPOSITS_PER_NAME = 16
_MAX_SUBSETS = 256
_SHARE_HEX = 2 * ((KEY_PRIME.bit_length() + 7) // 8)
_NONCE = re.compile(r"[0-9a-f]{32}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@+-]{0,511}")
_PSEUDONYM = re.compile(r"TS[0-9A-F]{20}$")
_HEADER = len(ESCROW_MAGIC) + 1 + 12
_log = logging.getLogger(__name__)


# ----- the envelope ----------------------------------------------------------------------
@dataclass(frozen=True)
class Sealed:
    """An object sealed for the vault: its envelope, the envelope's digest and the key's
    shares (``shares[i]`` is for the custodian with node id ``i + 1``)."""

    envelope: bytes
    digest: str
    shares: tuple[int, ...]


def _aad(name: str) -> bytes:
    return ESCROW_MAGIC + bytes([ESCROW_VERSION]) + name.encode()


def envelope_digest(envelope: bytes) -> str:
    """The SHA-256 of an envelope, hex (what a deposit is bound to)."""
    return hashlib.sha256(envelope).hexdigest()


def is_sealed(data: bytes) -> bool:
    """Whether ``data`` is an escrow envelope (else a legacy, pre-escrow object)."""
    return data.startswith(ESCROW_MAGIC)


def seal(name: str, plaintext: bytes, *, parties: int, t: int) -> Sealed:
    """Encrypt ``plaintext`` for vault object ``name`` under a fresh key and share the key
    among ``parties`` custodians, any ``t + 1`` of whom reconstruct it."""
    drbg = Drbg()  # a fresh key from ``secrets`` for each object
    key = drbg.random_bytes(32)
    nonce = drbg.random_bytes(12)
    envelope = (
        ESCROW_MAGIC
        + bytes([ESCROW_VERSION])
        + nonce
        + AESGCM(key).encrypt(nonce, plaintext, _aad(name))
    )
    value = int.from_bytes(key, "big")
    shares = share(value, n=parties, t=t, p=KEY_PRIME, rng=drbg)
    return Sealed(envelope, envelope_digest(envelope), tuple(shares))


def combine_key(shares: Mapping[int, int], t: int) -> bytes:
    """The data key from custodians' shares ``{node id: share}`` (at least ``t + 1``;
    with more, up to the correctable number of wrong shares are corrected)."""
    if len(shares) < t + 1:
        raise InsufficientSharesError(f"{t + 1} key shares are needed, {len(shares)} released")
    try:
        value, _ = reconstruct_robust({i - 1: [v] for i, v in shares.items()}, t=t, p=KEY_PRIME)
    except InconsistentSharesError:
        raise IntegrityError("the custodians' key shares disagree") from None
    key = int(value[0])
    if key >> 256:
        raise IntegrityError("the custodians' key shares do not make a key")
    return key.to_bytes(32, "big")


def open_sealed(name: str, envelope: bytes, key: bytes) -> bytes:
    """The plaintext of vault object ``name``; IntegrityError if the key, the name or the
    envelope is wrong."""
    if len(envelope) < _HEADER + 16 or not is_sealed(envelope):
        raise InputError(f"{name}: not an escrow envelope")
    if envelope[len(ESCROW_MAGIC)] != ESCROW_VERSION:
        raise InputError(f"{name}: escrow envelope version {envelope[len(ESCROW_MAGIC)]}")
    nonce = envelope[len(ESCROW_MAGIC) + 1 : _HEADER]
    try:
        return AESGCM(key).decrypt(nonce, envelope[_HEADER:], _aad(name))
    except InvalidTag:
        raise IntegrityError(f"{name}: the released key does not open the object") from None


def open_with_shares(name: str, envelope: bytes, shares: Mapping[int, int], t: int) -> bytes:
    """The plaintext of ``name`` from custodians' key shares ``{node id: share}``: all of
    them when they agree, else the first ``t + 1`` of them whose key opens the envelope
    (AES-GCM authenticates it), so a custodian sending a wrong share is outvoted."""
    try:
        return open_sealed(name, envelope, combine_key(shares, t))
    except IntegrityError:
        if len(shares) <= t + 1:
            raise
    for tried, subset in enumerate(itertools.combinations(sorted(shares), t + 1)):
        if tried >= _MAX_SUBSETS:
            break
        with contextlib.suppress(IntegrityError):
            return open_sealed(name, envelope, combine_key({i: shares[i] for i in subset}, t))
    raise IntegrityError(f"{name}: the custodians' key shares do not open the object")


def encode_share(value: int) -> str:
    """A key share as fixed-width hex."""
    return f"{value:0{_SHARE_HEX}x}"


def decode_share(text: Any) -> int:
    """A key share from its hex form; InputError if malformed."""
    if not isinstance(text, str) or len(text) != _SHARE_HEX:
        raise InputError("a key share is fixed-width hex")
    try:
        value = int(text, 16)
    except ValueError:
        raise InputError("a key share is fixed-width hex") from None
    if value >= KEY_PRIME:
        raise InputError("a key share is out of range")
    return value


# ----- the request -----------------------------------------------------------------------
@dataclass(frozen=True)
class ReidentifyRequest:
    """The body of a re-identification request (a signed document)."""

    refs: tuple[str, ...]
    reason: str
    requested_by: str
    issued_at: float
    nonce: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ReidentifyRequest:
        """Parse a request body; InputError if malformed, PolicyError without a reason."""
        if body.get("format") != REQUEST_FORMAT or body.get("version") != 1:
            raise InputError("not a re-identification request (format tessera-reidentify v1)")
        refs = body.get("refs")
        if not isinstance(refs, list) or not 1 <= len(refs) <= MAX_REFS:
            raise InputError(f"a request names 1 to {MAX_REFS} vault objects (refs)")
        if not all(isinstance(r, str) and _REF.fullmatch(r) and ".." not in r for r in refs):
            raise InputError("a request's refs must be vault object names")
        if len(set(refs)) != len(refs):
            raise InputError("a request names each object once")
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise PolicyError("a re-identification request needs a reason")
        issued = body.get("issued_at")
        if isinstance(issued, bool) or not isinstance(issued, int | float):
            raise InputError("a request carries issued_at (unix seconds)")
        if not (isinstance(issued, int) or math.isfinite(issued)) or not 0 <= issued < 1e11:
            raise InputError("a request carries issued_at (unix seconds)")
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise InputError("a request carries a nonce of 32 hex digits")
        requested_by = body.get("requested_by")
        valid_name(requested_by if isinstance(requested_by, str) else "")
        return cls(tuple(refs), reason.strip(), str(requested_by), float(issued), nonce)

    def check_fresh(self, now: float) -> None:
        """ReplayError unless issued at most 7 days ago and at most 5 minutes ahead."""
        age = now - self.issued_at
        if age > MAX_AGE_S:
            raise ReplayError(
                f"the request was signed {age / 86400:.1f} days ago; re-identification "
                f"requests are valid for {MAX_AGE_S // 86400} days: file a new one"
            )
        if age < -FUTURE_S:
            raise ReplayError(
                f"the request was signed {round(-age)} s in the future by this custodian's "
                "clock: check the clocks"
            )


def approvers(roster: Roster, signers: set[str]) -> set[str]:
    """The signers who count towards the quorum: stewards and officers of ``roster``,
    one per distinct key."""
    counted: dict[str, str] = {}
    for name in sorted(signers):
        person = roster.get(name)
        if person is not None and person.roles & PRIVILEGED:
            counted.setdefault(person.key.key_id, name)
    return set(counted.values())


def admit_request(
    roster: Roster, request: ReidentifyRequest, signers: set[str], now: float
) -> None:
    """Refuse (PolicyError, ReplayError) unless ``roster``'s people approved ``request``;
    ``signers`` are the verified ones.  Nonces are not checked here."""
    request.check_fresh(now)
    counted = approvers(roster, signers)
    quorum = roster.reidentify_quorum
    if len(counted) < quorum:
        noun = "signature" if quorum == 1 else "signatures"
        raise PolicyError(
            f"re-identification needs {quorum} {noun} of stewards or officers; this request "
            f"has {len(counted)}"
        )
    if request.requested_by not in signers:
        raise PolicyError(
            f"the request is not signed by the person it names ({request.requested_by})"
        )


# ----- the custodian's side ----------------------------------------------------------------
def _clip(value: Any, limit: int) -> str:
    """``value`` as printable text of at most ``limit`` characters (for audit records)."""
    text = value if isinstance(value, str) else ""
    return "".join(c if c.isprintable() else " " for c in text)[:limit]


def _claimed(raw: Any) -> dict[str, str]:
    """What an (unverified) request says about itself, cut short, for a refusal record."""
    body = raw.get("body") if isinstance(raw, dict) else None
    body = body if isinstance(body, dict) else {}
    refs = body.get("refs")
    names = [r for r in refs[:50] if isinstance(r, str)] if isinstance(refs, list) else []
    return {
        "refs": _clip(",".join(names), 2000),
        "reason": _clip(body.get("reason"), 500),
        "requested_by": _clip(body.get("requested_by"), 64),
        "nonce": _clip(body.get("nonce"), 32),
    }


class Escrow:
    """One custodian's key shares and the requests it released for (``escrow.sqlite3``).

    ``roster`` returns the custodian's pinned roster; ``audit`` is its own log.
    """

    def __init__(
        self,
        root: Path,
        *,
        node_id: int,
        roster: Callable[[], Roster],
        audit: AuditSink,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.node_id = node_id
        self.roster = roster
        self.audit = audit
        self.clock = clock
        self._lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "escrow.sqlite3", check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS deposits (name TEXT NOT NULL, digest TEXT NOT NULL, "
            "share TEXT NOT NULL, deposited REAL NOT NULL, PRIMARY KEY (name, digest))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, issued_at REAL NOT "
            "NULL, released REAL NOT NULL)"
        )
        self._db.commit()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # ----- deposits ----------------------------------------------------------------------
    def deposit(self, doc: Any) -> int:
        """Keep the shares in ``{"deposits": [{"name", "digest", "share", "node"}]}``;
        how many were new.  Refuses (PolicyError) to replace a share already held."""
        items = doc.get("deposits") if isinstance(doc, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_REFS:
            raise InputError(f"a deposit carries 1 to {MAX_REFS} shares")
        rows = [self._deposit_row(item) for item in items]
        added = 0
        with self._lock:
            try:
                for name, digest, value in rows:
                    added += self._insert(name, digest, value)
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
        return added

    def _deposit_row(self, item: Any) -> tuple[str, str, str]:
        if not isinstance(item, dict):
            raise InputError("a deposit is an object")
        name, digest = item.get("name"), item.get("digest")
        if not isinstance(name, str) or not _REF.fullmatch(name) or ".." in name:
            raise InputError("a deposit names a vault object")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise InputError("a deposit carries the SHA-256 of its envelope")
        if item.get("node") != self.node_id:
            raise InputError("this key share is for another custodian")
        return name, digest, encode_share(decode_share(item.get("share")))

    def _insert(self, name: str, digest: str, value: str) -> int:
        held = self._db.execute(
            "SELECT digest, share FROM deposits WHERE name = ?", (name,)
        ).fetchall()
        same = [s for d, s in held if d == digest]
        if same:
            if not hmac.compare_digest(same[0].encode(), value.encode()):
                raise PolicyError(f"a key share is already deposited for {name}; not replaced")
            return 0
        if len(held) >= MAX_DEPOSITS_PER_NAME:
            raise PolicyError(f"{name} has {len(held)} key shares deposited already")
        self._db.execute(
            "INSERT INTO deposits VALUES (?, ?, ?, ?)", (name, digest, value, self.clock())
        )
        return 1

    def _shares(
        self, refs: Sequence[str], nonce: str, receiver: str
    ) -> dict[str, list[dict[str, Any]]]:
        """The shares held for ``refs``, each sealed to ``receiver`` (never in the clear)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for name in refs:
            rows = self._db.execute(
                "SELECT digest, share FROM deposits WHERE name = ? ORDER BY rowid", (name,)
            ).fetchall()
            out[name] = [
                {
                    "digest": str(d),
                    "sealed": seal_to(
                        receiver, str(s).encode(), label=share_label(nonce, name, str(d))
                    ),
                }
                for d, s in rows
            ]
        return out

    # ----- releases ----------------------------------------------------------------------
    def _admit(self, raw: Any, signers: set[str]) -> tuple[ReidentifyRequest, str]:
        """The approved request in ``raw`` and its run document's receiver key; refuses
        (raises) otherwise.  ``signers`` gets the request's verified signers."""
        if not isinstance(raw, dict) or "request" not in raw:
            raise InputError('a release carries {"request": signed request, "run": run document}')
        document = SignedDocument.from_dict(raw["request"])
        request = ReidentifyRequest.from_body(document.body)
        roster = self.roster()
        signers.update(verified_signers(document, roster.keys(), context=REIDENTIFY_CONTEXT))
        now = self.clock()
        admit_request(roster, request, signers, now)
        receiver = admit_run(roster, request.nonce, request.requested_by, raw.get("run"), now)
        return request, receiver

    def release(self, raw: Any) -> dict[str, Any]:
        """This custodian's shares for the refs of a signed request, sealed to the run
        document's receiver key, if people of its roster approved the request and its
        requester signed the run document (see the module docstring); every outcome is
        audited."""
        claimed = _claimed(raw.get("request", raw) if isinstance(raw, dict) else None)
        signers: set[str] = set()
        try:
            request, receiver = self._admit(raw, signers)
            with self._lock:
                used = self._db.execute(
                    "SELECT 1 FROM nonces WHERE nonce = ?", (request.nonce,)
                ).fetchone()
                if used is not None:
                    raise ReplayError("this re-identification request was used already")
                released = self._shares(request.refs, request.nonce, receiver)
                count = sum(1 for v in released.values() if v)
                # the trail first: nothing leaves that the log does not show
                self._record(claimed, signers, None, count, user=request.requested_by)
                self._db.execute(
                    "DELETE FROM nonces WHERE issued_at < ?", (self.clock() - 2 * MAX_AGE_S,)
                )
                self._db.execute(
                    "INSERT INTO nonces VALUES (?, ?, ?)",
                    (request.nonce, request.issued_at, self.clock()),
                )
                self._db.commit()
        except TesseraError as exc:
            self._record(claimed, signers, exc, 0)
            raise
        return {"node": self.node_id, "released": released}

    def _record(
        self,
        claimed: Mapping[str, str],
        signers: set[str],
        error: TesseraError | None,
        released: int,
        *,
        user: str = "",
    ) -> None:
        """One ``dicom.reidentify`` event in this custodian's log.  A success that cannot
        be recorded is refused (raises); a refusal that cannot be is only logged."""
        refs = claimed["refs"]
        pseudonyms = {p for r in refs.split(",") for p in r.split("/")[1:2] if _PSEUDONYM.match(p)}
        detail: dict[str, str | int | float | bool] = {
            "refs": refs,
            "signers": ",".join(sorted(signers)),
            "reason": claimed["reason"],
            "requested_by": claimed["requested_by"],
            "nonce": claimed["nonce"],
            "released": released,
        }
        if error is not None:
            detail["error"] = error.code
        event = AuditEvent(
            Action.DICOM_REIDENTIFY,
            outcome="success" if error is None else "denied",
            user=user,
            source=f"node-{self.node_id}",
            entity=refs[:500],
            entity_type="escrow",
            patient=pseudonyms.pop() if len(pseudonyms) == 1 else "",
            purpose="re-identification",
            detail=detail,
        )
        if error is None:
            self.audit.emit(event)
            return
        try:
            self.audit.emit(event)
        except Exception as exc:  # the refusal stands either way
            _log.warning("node %d: refusal not audited (%s)", self.node_id, type(exc).__name__)


# ----- the client's side -------------------------------------------------------------------
class Depositor:
    """Seals objects for the vault and deposits their key shares on every custodian.

    Every custodian must accept its share (else the object is not stored).  Connections
    are opened on first use and kept until :meth:`close`; when a node went away (local
    nodes exit when idle), they are opened again once (deposits are idempotent).
    """

    def __init__(self, env: Environment) -> None:
        ids = sorted(n.id for n in env.nodes)
        if ids != list(range(1, len(ids) + 1)):
            raise ConfigError(f"{env.path}: node ids must be 1..{len(ids)}")
        if not 0 <= env.mpc_threshold < len(ids):
            raise ConfigError(f"{env.path}: mpc_threshold must be below the number of nodes")
        self.env = env
        self._clients: dict[int, NodeClient] | None = None
        self._lock = threading.Lock()

    def _connect(self, *, again: bool = False) -> dict[int, NodeClient]:
        if again:
            self.close()
        with self._lock:
            if self._clients is None:
                self._clients = ensure_nodes(self.env)
            return self._clients

    def seal(self, name: str, plaintext: bytes) -> bytes:
        """The envelope to store as vault object ``name``, once every custodian holds its
        share of the key."""
        sealed = seal(name, plaintext, parties=len(self.env.nodes), t=self.env.mpc_threshold)

        def put(node: int, client: NodeClient) -> Any:
            item = {
                "name": name,
                "digest": sealed.digest,
                "share": encode_share(sealed.shares[node - 1]),
                "node": node,
            }
            body = json.dumps({"deposits": [item]})
            headers = {"Content-Type": "application/json"}
            return client.request("PUT", "/v1/escrow", content=body, headers=headers)

        clients = self._connect()
        _, errors = each_node(clients, put)
        if any(isinstance(e, StorageUnavailableError) for e in errors.values()):
            clients = self._connect(again=True)
            _, errors = each_node(clients, put)
        _raise_refusals(errors, len(clients))
        return sealed.envelope

    def close(self) -> None:
        """Close the connections to the custodians."""
        with self._lock:
            clients, self._clients = self._clients, None
        for client in (clients or {}).values():
            with contextlib.suppress(Exception):
                client.close()

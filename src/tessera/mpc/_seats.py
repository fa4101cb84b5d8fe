"""Bind MPyC seats to TLS certificates inside Tessera's party processes.

MPyC 0.11 (``mpyc.runtime.Runtime.start`` with ``--ssl``) verifies every peer's
certificate chain against ``.config/mpyc_ca.crt``, but the party number of a peer is
taken on trust: a listening party reads it from the first two bytes the connecting peer
sends (``asyncoro.MessageExchanger.data_received``).  Any holder of a valid node
certificate could therefore take another party's seat.  :func:`install` binds them:

* **listening end** (the peer connected to us and announces party ``p``): before MPyC
  reads the announcement, the peer's certificate must name party ``p`` and no other
  seat, and ``p`` must be a party below ours (only those connect to us);
* **connecting end** (we dialled party ``p`` with ``server_hostname='MPyC party p'``):
  OpenSSL's host-name check stays on; a failed certificate verification, which MPyC
  would retry forever, aborts at once, and after the handshake the certificate must
  name party ``p`` and no other seat, before our PRSS keys are sent.

A certificate names party ``p`` by the DNS name or common name ``MPyC party {p}`` or
``tessera-node-{p+1}`` (see :mod:`tessera.workflows.nodes_pki`).  A failed check writes
one ``seat check: ...`` line on stderr, aborts the connection and ends the process with
status 1; so does losing a peer before all parties are connected (``mpc start-up: ...``;
the other honest parties would otherwise wait for it forever).  Plain TCP runs (no
``--ssl``) are left alone.

Version-pinned assumptions (checked by :func:`install`, which refuses to run otherwise):
``MessageExchanger`` has the slots ``runtime``, ``peer_pid``, ``bytes`` and
``transport`` (set by ``connection_made``) and the methods ``connection_made``,
``data_received`` and ``connection_lost``; ``peer_pid`` is None exactly on the listening
end until the announcement is read; the announcement is the first two bytes of the
stream, little-endian; ``runtime.pid`` and ``runtime.start_time`` (None until ``start``
completes) exist; TLS contexts come from ``ssl.create_default_context`` and the client's
server name is ``MPyC party {p}``.  Whether a connection is TLS is read from its
transport (``ssl_object``), not from MPyC's options.
"""

from __future__ import annotations

import os
import re
import ssl
import sys
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

__all__ = ["EXIT_STATUS", "install", "seat_mismatch", "seats_named"]

EXIT_STATUS = 1
_MPYC_NAME = re.compile(r"MPyC party (\d+)")
_NODE_NAME = re.compile(r"tessera-node-(\d+)")
_SLOTS = {"runtime", "peer_pid", "bytes", "transport"}
_METHODS = ("connection_made", "data_received", "connection_lost")


def _seat_of_name(name: str) -> int | None:
    match = _MPYC_NAME.fullmatch(name)
    if match:
        return int(match.group(1))
    match = _NODE_NAME.fullmatch(name)
    if match and int(match.group(1)) >= 1:
        return int(match.group(1)) - 1
    return None


def _names(cert: Mapping[str, Any]) -> Iterable[str]:
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS":
            yield str(value)
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                yield str(value)


def seats_named(cert: Mapping[str, Any] | None) -> set[int]:
    """The MPyC party numbers a peer certificate (``getpeercert()`` dict) names."""
    if not cert:
        return set()
    return {seat for name in _names(cert) if (seat := _seat_of_name(name)) is not None}


def _describe(seats: set[int]) -> str:
    if not seats:
        return "no party"
    if len(seats) == 1:
        return f"party {next(iter(seats))}"
    return "parties " + ", ".join(str(s) for s in sorted(seats))


def seat_mismatch(
    party: int, cert: Mapping[str, Any] | None, *, announced: bool, own: int | None = None
) -> str | None:
    """Why a peer certificate does not fit seat ``party``, or None if it does.

    ``announced``: the peer claimed ``party`` (we listen) rather than being dialled as
    ``party`` (we connect).  ``own``: our party number, on the listening end, where only
    lower parties may connect.
    """
    seats = seats_named(cert)
    if announced:
        if own is not None and not 0 <= party < own:
            return f"seat check: peer claims party {party} but only parties below {own} connect"
        if seats != {party}:
            return f"seat check: peer claims party {party} but its certificate names " + (
                _describe(seats)
            )
        return None
    if seats != {party}:
        return f"seat check: peer listening as party {party} has a certificate naming " + (
            _describe(seats)
        )
    return None


def _abort(reason: str, transport: Any = None) -> NoReturn:
    """Log ``reason`` (one stderr line), drop the connection and end the process."""
    sys.stderr.write(reason + "\n")
    sys.stderr.flush()
    if transport is not None:
        transport.abort()
    os._exit(EXIT_STATUS)


def _check(protocol: Any, transport: Any, party: int, *, announced: bool) -> None:
    if transport.get_extra_info("ssl_object") is None:  # plain TCP (no --ssl)
        return
    cert = transport.get_extra_info("peercert")
    own = protocol.runtime.pid if announced else None
    reason = seat_mismatch(party, cert, announced=announced, own=own)
    if reason is not None:
        _abort(reason, transport)


class _SeatSSLObject(ssl.SSLObject):
    """Client handshakes to an MPyC seat that fail verification end the process."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except ssl.SSLCertVerificationError as exc:
            match = None if self.server_side else _MPYC_NAME.fullmatch(self.server_hostname or "")
            if match is None:
                raise
            party = match.group(1)
            _abort(
                f"seat check: peer listening as party {party} fails verification as "
                f"party {party}: {exc.verify_message}"
            )


def _patch_contexts() -> None:
    original = ssl.create_default_context
    if getattr(original, "_tessera_seats", False):
        return

    def create_default_context(
        purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH, **kwargs: Any
    ) -> ssl.SSLContext:
        ctx = original(purpose, **kwargs)
        ctx.sslobject_class = _SeatSSLObject
        return ctx

    create_default_context._tessera_seats = True  # type: ignore[attr-defined]
    ssl.create_default_context = create_default_context


def _patch_exchanger(cls: Any) -> None:
    made, received, lost = (getattr(cls, name) for name in _METHODS)

    def connection_made(self: Any, transport: Any) -> None:
        if self.peer_pid is not None:  # we connected to seat peer_pid
            _check(self, transport, self.peer_pid, announced=False)
        made(self, transport)

    def data_received(self: Any, data: bytes) -> None:
        if self.peer_pid is None and len(self.bytes) + len(data) >= 2:  # the announcement
            head = (bytes(self.bytes[:2]) + bytes(data[:2]))[:2]
            _check(self, self.transport, int.from_bytes(head, "little"), announced=True)
        received(self, data)

    def connection_lost(self: Any, exc: BaseException | None) -> None:
        if self.peer_pid is None:  # never announced a seat: nothing to deregister
            return
        if self.runtime.start_time is None:
            _abort(f"mpc start-up: lost party {self.peer_pid} before all parties connected")
        lost(self, exc)

    cls.connection_made = connection_made
    cls.data_received = data_received
    cls.connection_lost = connection_lost
    cls._tessera_seats = True


def install() -> None:
    """Bind MPyC seats to peer certificates (idempotent; before ``mpyc.runtime`` runs)."""
    from mpyc import asyncoro

    cls = asyncoro.MessageExchanger
    if not getattr(cls, "_tessera_seats", False):
        slots = set(getattr(cls, "__slots__", ()))
        if not slots >= _SLOTS or not all(callable(getattr(cls, m, None)) for m in _METHODS):
            raise RuntimeError("unsupported MPyC version: cannot bind seats to certificates")
        _patch_exchanger(cls)
    _patch_contexts()

"""Seat checks of MPyC connections (:mod:`tessera.mpc._seats`) without processes.

The protocol patches are applied to a subclass of MPyC's ``MessageExchanger`` so that
this test process's MPyC and ``ssl`` stay untouched; ``install`` itself runs in a child
process.  Real party processes over TLS: ``tests/integration/test_mpc_seats.py``.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from tessera.mpc import _seats
from tessera.mpc._seats import seat_mismatch, seats_named

asyncoro = pytest.importorskip("mpyc.asyncoro")


def node_cert(node: int, *extra: str) -> dict[str, Any]:
    """``getpeercert()`` of node ``node``'s certificate as the node PKI issues it."""
    return {
        "subject": ((("commonName", f"tessera-node-{node}"),),),
        "subjectAltName": (
            ("IP Address", "127.0.0.1"),
            ("DNS", f"tessera-node-{node}"),
            ("DNS", f"MPyC party {node - 1}"),
            ("DNS", "localhost"),
            *(("DNS", name) for name in extra),
        ),
    }


def test_seats_named() -> None:
    assert seats_named(node_cert(1)) == {0}
    assert seats_named(node_cert(3)) == {2}
    assert seats_named(node_cert(2, "MPyC party 0")) == {0, 1}
    assert seats_named({"subject": ((("commonName", "MPyC party 4"),),)}) == {4}
    assert seats_named({"subject": ((("commonName", "tessera-requester"),),)}) == set()
    assert seats_named({"subject": ((("commonName", "tessera-node-0"),),)}) == set()
    assert seats_named({"subjectAltName": (("DNS", "xMPyC party 1"),)}) == set()
    assert seats_named(None) == seats_named({}) == set()


def test_seat_mismatch_reasons() -> None:
    assert seat_mismatch(1, node_cert(2), announced=True, own=2) is None
    assert seat_mismatch(1, node_cert(2), announced=False) is None
    assert (
        seat_mismatch(1, node_cert(1), announced=True, own=2)
        == "seat check: peer claims party 1 but its certificate names party 0"
    )
    assert (
        seat_mismatch(2, node_cert(1), announced=False)
        == "seat check: peer listening as party 2 has a certificate naming party 0"
    )
    assert (
        seat_mismatch(0, node_cert(2, "MPyC party 0"), announced=True, own=2)
        == "seat check: peer claims party 0 but its certificate names parties 0, 1"
    )
    assert seat_mismatch(0, None, announced=False) == (
        "seat check: peer listening as party 0 has a certificate naming no party"
    )
    assert seat_mismatch(2, node_cert(3), announced=True, own=2) == (
        "seat check: peer claims party 2 but only parties below 2 connect"
    )


class AbortedError(Exception):
    pass


class Transport:
    def __init__(self, cert: dict[str, Any] | None) -> None:
        self.cert = cert
        self.written: list[bytes] = []
        self.aborted = False

    def get_extra_info(self, name: str) -> Any:
        if name == "ssl_object":  # a stand-in: only "TLS or not" matters
            return None if self.cert is None else object()
        assert name == "peercert"
        return self.cert

    def writelines(self, parts: list[bytes]) -> None:
        self.written.extend(parts)

    def abort(self) -> None:
        self.aborted = True


class Runtime:
    def __init__(self, pid: int, *, started: bool = False) -> None:
        self.pid = pid
        self.options = SimpleNamespace(no_prss=True)
        self.start_time = 1.0 if started else None
        self.registered: list[int] = []
        self.unregistered: list[int] = []

    def set_protocol(self, peer_pid: int, protocol: Any) -> None:
        self.registered.append(peer_pid)

    def unset_protocol(self, peer_pid: int) -> None:
        self.unregistered.append(peer_pid)


@pytest.fixture
def exchanger(monkeypatch: pytest.MonkeyPatch) -> type[Any]:
    """A patched subclass of MPyC's ``MessageExchanger``; aborts raise ``AbortedError``."""

    class Exchanger(asyncoro.MessageExchanger):
        __slots__ = ()

    _seats._patch_exchanger(Exchanger)

    def abort(reason: str, transport: Any = None) -> None:
        if transport is not None:
            transport.abort()
        raise AbortedError(reason)

    monkeypatch.setattr(_seats, "_abort", abort)
    return Exchanger


def test_listening_end_checks_the_announced_party(exchanger: type[Any]) -> None:
    rt = Runtime(pid=2)
    proto = exchanger(rt)
    transport = Transport(node_cert(1))  # names party 0
    proto.connection_made(transport)
    proto.data_received(b"\x01")  # half an announcement: nothing to check yet
    with pytest.raises(AbortedError, match="peer claims party 1 but its certificate names party 0"):
        proto.data_received(b"\x00")
    assert transport.aborted
    assert rt.registered == []
    assert proto.peer_pid is None


def test_listening_end_accepts_the_named_party(exchanger: type[Any]) -> None:
    rt = Runtime(pid=2)
    proto = exchanger(rt)
    proto.connection_made(Transport(node_cert(2)))
    proto.data_received(b"\x01\x00")
    assert rt.registered == [1]
    assert proto.peer_pid == 1


def test_connecting_end_checks_before_sending(exchanger: type[Any]) -> None:
    rt = Runtime(pid=0)
    proto = exchanger(rt, 2)
    transport = Transport(node_cert(2))  # names party 1, dialled as party 2
    with pytest.raises(AbortedError, match="peer listening as party 2 has a certificate naming"):
        proto.connection_made(transport)
    assert transport.written == []
    assert rt.registered == []
    good = Transport(node_cert(3))
    exchanger(rt, 2).connection_made(good)
    assert good.written == [b"\x00\x00"]
    assert rt.registered == [2]


def test_tls_without_a_peer_certificate_is_refused(exchanger: type[Any]) -> None:
    with pytest.raises(AbortedError, match="certificate naming no party"):
        exchanger(Runtime(pid=0), 1).connection_made(Transport({}))


def test_plain_tcp_is_left_alone(exchanger: type[Any]) -> None:
    rt = Runtime(pid=1)
    proto = exchanger(rt)
    proto.connection_made(Transport(None))  # no TLS: no certificate to check
    proto.data_received(b"\x00\x00")
    assert rt.registered == [0]


def test_losing_a_peer_during_start_up_aborts(exchanger: type[Any]) -> None:
    rt = Runtime(pid=0)
    proto = exchanger(rt, 1)
    proto.connection_made(Transport(node_cert(2)))
    with pytest.raises(
        AbortedError, match="mpc start-up: lost party 1 before all parties connected"
    ):
        proto.connection_lost(None)
    exchanger(Runtime(pid=1)).connection_lost(None)  # never announced: ignored
    started = Runtime(pid=0, started=True)
    proto = exchanger(started, 1)
    proto.connection_made(Transport(node_cert(2)))
    proto.connection_lost(None)  # a normal shutdown
    assert started.unregistered == [1]


def test_install_refuses_unknown_mpyc(monkeypatch: pytest.MonkeyPatch) -> None:
    class Other:
        __slots__ = ("runtime",)

    monkeypatch.setattr(asyncoro, "MessageExchanger", Other)
    with pytest.raises(RuntimeError, match="unsupported MPyC version"):
        _seats.install()


def test_install_patches_mpyc_and_tls_contexts() -> None:
    code = """
import ssl
from tessera.mpc import _speedups, _seats
from mpyc import asyncoro

_speedups.install()
_speedups.install()
_seats.install()
made = asyncoro.MessageExchanger.connection_made
assert asyncoro.MessageExchanger._tessera_seats
assert made.__qualname__.startswith("_patch_exchanger")
client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
assert client.sslobject_class is _seats._SeatSSLObject is server.sslobject_class
assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr

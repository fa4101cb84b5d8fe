"""Failed sign-ins lock an address or a token out, for longer each time; a flood of
refused attempts is one audit event per window."""

from __future__ import annotations

import pytest

from tessera.server.app import Throttle
from tessera.server.throttle import Digest, account_key, address_key


def test_lockout_and_release() -> None:
    now = [1000.0]
    t = Throttle(3, 600.0, lambda: now[0])
    for _ in range(2):
        t.failed("10.0.0.7")
    assert t.wait_s("10.0.0.7") == 0.0
    t.failed("10.0.0.7")
    assert t.wait_s("10.0.0.7") == pytest.approx(600.0)
    assert t.wait_s("10.0.0.8") == 0.0  # other addresses are not affected
    now[0] += 599.0
    assert t.wait_s("10.0.0.7") == pytest.approx(1.0)
    now[0] += 1.0
    assert t.wait_s("10.0.0.7") == 0.0  # the oldest failure left the window
    with pytest.raises(ValueError):
        Throttle(0, 600.0, lambda: 0.0)


def test_exponential_back_off_and_fresh_start() -> None:
    now = [0.0]
    t = Throttle(2, 10.0, lambda: now[0], max_lockout_s=1000.0)
    waits = []
    for _ in range(5):
        t.failed("k")
        t.failed("k")
        waits.append(t.wait_s("k"))
        now[0] += waits[-1]
    assert waits == [10.0, 20.0, 40.0, 80.0, 160.0]
    now[0] += 1000.0  # quiet for max_lockout_s: the strikes are forgotten
    t.failed("k")
    t.failed("k")
    assert t.wait_s("k") == 10.0


def test_any_locked_key_locks_the_request() -> None:
    t = Throttle(1, 60.0, lambda: 0.0)
    token, address = account_key("stolen"), address_key("198.51.100.1")
    assert "stolen" not in token
    t.failed(token)
    assert t.wait_s(address_key("198.51.100.2"), token) == 60.0  # the token, anywhere
    assert t.wait_s(address) == 0.0


def test_memory_stays_bounded() -> None:
    now = [0.0]
    t = Throttle(5, 1.0, lambda: now[0], max_keys=100)
    for i in range(1000):
        now[0] += 0.01
        t.failed(f"k{i}")
    assert len(t._keys) <= 100


def test_digest_one_event_per_window_with_the_count() -> None:
    now = [0.0]
    d = Digest(60.0, lambda: now[0])
    assert d.note("a") == 1
    assert [d.note("a") for _ in range(4)] == [None] * 4
    assert d.note("b") == 1  # keys are separate
    now[0] += 60.0
    assert d.note("a") == 5  # this attempt and the four held back
    assert d.note("a") is None

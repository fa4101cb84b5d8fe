"""Failed sign-ins lock an address out for the rest of the window."""

from __future__ import annotations

import pytest

from tessera.server.app import Throttle


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

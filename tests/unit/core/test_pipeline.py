"""The ordered block pipeline: order, slot ownership, errors."""

from __future__ import annotations

import threading
import time

import pytest

from tessera.core.pipeline import default_workers, run_ordered


@pytest.mark.parametrize(("workers", "nslots"), [(1, 1), (1, 3), (2, 1), (2, 3), (4, 5)])
def test_stores_in_order_and_slots_are_exclusive(workers: int, nslots: int) -> None:
    slots = [{"busy": False, "value": -1} for _ in range(nslots)]
    stored: list[int] = []
    lock = threading.Lock()

    def load(i: int, slot: dict[str, object]) -> None:
        with lock:
            assert not slot["busy"], "slot handed out twice"
            slot["busy"] = True
        slot["value"] = i

    def work(i: int, slot: dict[str, object]) -> int:
        time.sleep(0.001 * ((i * 7) % 3))  # finish out of order
        assert slot["value"] == i
        return i * i

    def store(i: int, slot: dict[str, object], result: int) -> None:
        assert result == i * i and slot["value"] == i
        stored.append(i)
        slot["busy"] = False

    run_ordered(range(40), slots, load, work, store, workers=workers)
    assert stored == list(range(40))


def test_work_error_propagates_and_stops_loading() -> None:
    loaded: list[int] = []

    def work(i: int, _slot: object) -> int:
        if i == 3:
            raise RuntimeError("block 3 failed")
        return i

    with pytest.raises(RuntimeError, match="block 3"):
        run_ordered(
            range(100), [0, 1, 2], lambda i, _s: loaded.append(i), work, lambda *_: None, workers=2
        )
    assert max(loaded) < 10


def test_needs_a_slot_and_workers_are_bounded() -> None:
    with pytest.raises(ValueError):
        run_ordered(range(3), [], lambda *_: None, lambda *_: None, lambda *_: None, workers=2)
    assert 1 <= default_workers() <= 4

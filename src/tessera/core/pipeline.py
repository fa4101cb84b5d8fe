"""An ordered block pipeline: load on the calling thread, compute on worker threads,
store in order on the calling thread.

Splitting and combining spend their time in code that releases the GIL (the compiled
XOR kernel, AES and GHASH in OpenSSL), so worker threads scale across cores while the
calling thread reads the next block and writes finished ones.  Every block owns one
*slot* (its buffers) from load to store, so memory is bounded by the number of slots.

With one worker or one slot everything runs on the calling thread, in order, with no
thread at all (deterministic randomness for known-answer tests needs that order).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["default_workers", "run_ordered"]

Item = TypeVar("Item")
Slot = TypeVar("Slot")
Result = TypeVar("Result")

MAX_WORKERS = 4
"""More threads than this gain nothing here: the store side is one thread."""


def default_workers() -> int:
    """Worker threads for bulk work: the CPUs this process may use, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def run_ordered(
    items: Iterable[Item],
    slots: list[Slot],
    load: Callable[[Item, Slot], None],
    work: Callable[[Item, Slot], Result],
    store: Callable[[Item, Slot, Result], None],
    *,
    workers: int,
) -> None:
    """For every item in order: ``load`` it into a free slot, ``work`` on it (on a
    worker thread), then ``store`` it; stores happen in item order.

    ``work`` for different slots must be independent.  An exception from any step
    propagates after the work already started has finished; later items are not
    loaded.
    """
    if not slots:
        raise ValueError("at least one slot is needed")
    if workers <= 1 or len(slots) == 1:
        slot = slots[0]
        for item in items:
            load(item, slot)
            store(item, slot, work(item, slot))
        return
    free = deque(slots)
    pending: deque[tuple[Item, Slot, Future[Result]]] = deque()

    def finish_oldest() -> None:
        item, slot, future = pending.popleft()
        result = future.result()
        store(item, slot, result)
        free.append(slot)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tessera-block") as pool:
        try:
            for item in items:
                if not free:
                    finish_oldest()
                slot = free.popleft()
                load(item, slot)
                pending.append((item, slot, pool.submit(work, item, slot)))
            while pending:
                finish_oldest()
        finally:
            for _item, _slot, future in pending:
                future.cancel()

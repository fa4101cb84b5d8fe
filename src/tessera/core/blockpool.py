"""Worker processes for bulk block arithmetic, over shared memory.

Splitting and combining spend their time in many short numpy and OpenSSL calls; two
*threads* doing that fight over the GIL and run slower than one (measured here), so
large files use forked worker *processes*.  Block buffers live in one anonymous shared
mapping made before the fork, so workers read and write them in place and only small
job descriptions and results (tags, flags) cross the process boundary.

The object that does the work is registered before the pool forks and reached in the
child through the inherited registry; each child replaces its random source with a
fresh :class:`~tessera.core.rng.Drbg` (a forked child must never replay its parent's
keystream).
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.core.rng import Drbg

__all__ = ["SharedArena", "worker_count", "worker_pool"]

MIN_BLOCKS = 8
"""Below this many blocks, one process is faster than starting workers."""

_REGISTRY: dict[str, Any] = {}


def worker_count(nblocks: int) -> int:
    """Worker processes worth starting for ``nblocks`` blocks (0: stay in-process)."""
    override = os.environ.get("TESSERA_WORKERS")
    cpus = os.cpu_count() or 1
    wanted = int(override) if override and override.isdigit() else cpus
    if nblocks < MIN_BLOCKS or wanted < 2 or multiprocessing.parent_process() is not None:
        return 0
    return min(wanted, 4)


class SharedArena:
    """One anonymous shared mapping cut into numpy views (inherited across fork)."""

    def __init__(self, size: int) -> None:
        self._map = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_SHARED)
        self._used = 0

    def take(self, nbytes: int) -> npt.NDArray[np.uint8]:
        """A fresh view of ``nbytes`` (64-byte aligned)."""
        start = (self._used + 63) & ~63
        if start + nbytes > len(self._map):
            raise ValueError("arena exhausted")
        self._used = start + nbytes
        return np.frombuffer(self._map, dtype=np.uint8, count=nbytes, offset=start)

    def close(self) -> None:
        """Release the mapping (views must be gone)."""
        with contextlib.suppress(BufferError):  # a view still alive keeps it mapped
            self._map.close()


def _fresh_rng() -> None:
    for worker in _REGISTRY.values():
        if hasattr(worker, "rng"):
            worker.rng = Drbg()


def _call(token: str, method: str, *args: Any) -> Any:
    return getattr(_REGISTRY[token], method)(*args)


class WorkerPool:
    """Submit ``method(*args)`` of the registered object to the worker processes."""

    def __init__(self, executor: ProcessPoolExecutor, token: str) -> None:
        self._executor = executor
        self._token = token

    def submit(self, method: str, *args: Any) -> Future[Any]:
        """Run ``obj.method(*args)`` in a worker."""
        return self._executor.submit(_call, self._token, method, *args)


@contextmanager
def worker_pool(obj: object, workers: int) -> Iterator[WorkerPool]:
    """Fork ``workers`` processes that can run ``obj``'s methods on shared buffers."""
    token = secrets.token_hex(8)
    _REGISTRY[token] = obj
    try:
        context = multiprocessing.get_context("fork")
        executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_fresh_rng
        )
        try:
            yield WorkerPool(executor, token)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    finally:
        del _REGISTRY[token]


Submit = Callable[..., Future[Any]]

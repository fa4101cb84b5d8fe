"""The JSON document every bench prints with ``--json`` (one on stdout, nothing else).

Its top level is the same for every bench::

    {"bench": "sharing", "version": 1, "when": "2026-03-01T12:00:00Z",
     "title": "...", "command": "python bench/sharing.py --json", "seconds": 41.2,
     "machine": {"cores": 2, "python": "3.11.7", "cpu": "...", "platform": "...",
                 "memory_gib": 23.4, "load_start": 2.3, "load_end": 2.9,
                 "load_mean": 2.6, "load_max": 3.1},
     "params": {...}, "notes": ["..."],
     "results": [{"what": "...", "group": "...",
                  "baseline": {"label": "zfec encode", "value": 865.0, "unit": "MB/s"} | null,
                  "ours": {"label": "split", "value": 1285.0, "unit": "MB/s",
                           "also": {"cpu s": 0.2}},
                  "ratio": 1.48 | null, "ratio_of": "ours / baseline",
                  "target": ">= 1.2" , "met": true}],
     ...}

The load figures are the 1-minute load average, sampled every few seconds during the
run.  ``$BENCH_NOTE``, when set, becomes the first note (why a run used the parameters
it did, say).  ``baseline`` and ``ours`` are figures: a label, a number and its unit, and optionally
``also``, further numbers about the same measurement.  ``group``, ``target``, ``met``
and ``ratio_of`` are optional; ``notes`` too.  A bench may add keys of its own at the
top level (its detailed figures, as it printed them before the common shape existed).
``bench/report.py`` renders docs/performance.md from the committed documents in
bench/results/.

While ``--json`` is given, everything the bench would print (its own ``print`` and any
child process writing to the inherited standard output) goes to standard error instead:
see :func:`progress_to_stderr`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

VERSION = 1
REQUIRED = ("bench", "version", "when", "machine", "params", "results")


def figure(
    label: str, value: float, unit: str = "", also: dict[str, float] | None = None
) -> dict[str, Any]:
    """One measured number: what it is, its value and unit, and related numbers (their
    names say their units, e.g. ``{"p50 ms": 8.1}``)."""
    out: dict[str, Any] = {"label": label, "value": value, "unit": unit}
    if also:
        out["also"] = also
    return out


def result(
    what: str,
    ours: dict[str, Any],
    baseline: dict[str, Any] | None = None,
    *,
    ratio: float | None = None,
    ratio_of: str = "ours / baseline",
    group: str | None = None,
    target: str | None = None,
    met: bool | None = None,
) -> dict[str, Any]:
    """One row of ``results``; ``ratio`` is computed as ``ratio_of`` says when omitted."""
    if (
        ratio is None
        and baseline is not None
        and ratio_of in ("ours / baseline", "baseline / ours")
    ):
        b, o = float(baseline["value"]), float(ours["value"])
        num, den = (o, b) if ratio_of == "ours / baseline" else (b, o)
        ratio = num / den if den else None
    out: dict[str, Any] = {"what": what}
    if group:
        out["group"] = group
    out |= {"baseline": baseline, "ours": ours, "ratio": ratio}
    if ratio is not None:
        out["ratio_of"] = ratio_of
    if target is not None:
        out["target"] = target
    if met is not None:
        out["met"] = met
    return out


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    return None


class Run:
    """One run of a bench: when it started, on what, with which parameters."""

    def __init__(self, bench: str, doc: str | None, params: dict[str, Any]) -> None:
        self.bench = bench
        self.title = (doc or "").strip().splitlines()[0] if doc else bench
        self.params = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}
        self.when = datetime.now(UTC).replace(microsecond=0)
        self.load_start = os.getloadavg()[0]
        self.loads = [self.load_start]
        self.started = time.perf_counter()
        self._done = threading.Event()
        threading.Thread(target=self._sample, daemon=True, name="load-sampler").start()
        argv = [f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]] if sys.argv else []
        self.command = shlex.join(["python", *argv])

    def _sample(self, every_s: float = 5.0) -> None:
        while not self._done.wait(every_s):
            self.loads.append(os.getloadavg()[0])

    def document(
        self, results: list[dict[str, Any]], notes: list[str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """The bench's JSON document: the common keys, then ``extra`` (its own)."""
        self._done.set()
        load_end = os.getloadavg()[0]
        loads = [*self.loads, load_end]
        note = os.environ.get("BENCH_NOTE", "").strip()
        doc: dict[str, Any] = {
            "bench": self.bench,
            "version": VERSION,
            "when": self.when.isoformat().replace("+00:00", "Z"),
            "title": self.title,
            "command": self.command,
            "seconds": round(time.perf_counter() - self.started, 1),
            "machine": {
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "cpu": _cpu_model(),
                "platform": platform.platform(terse=True),
                "memory_gib": _memory_gib(),
                "load_start": round(self.load_start, 2),
                "load_end": round(load_end, 2),
                "load_mean": round(sum(loads) / len(loads), 2),
                "load_max": round(max(loads), 2),
            },
            "params": self.params,
            "notes": ([note] if note else []) + (notes or []),
            "results": results,
        }
        for key, value in extra.items():
            if key in doc:
                raise ValueError(f"bench key {key!r} clashes with the common shape")
            doc[key] = value
        return doc


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as null (strict JSON has neither)."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


@contextlib.contextmanager
def progress_to_stderr(enabled: bool) -> Iterator[None]:
    """While ``enabled``, file descriptor 1 is standard error: the bench's own prints and
    its children's output go there, so that only :func:`emit` writes to stdout."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def emit(doc: dict[str, Any]) -> None:
    """Print ``doc`` as the one JSON document on standard output."""
    print(json.dumps(finite(doc), indent=2, allow_nan=False))

"""Benchmark: population scale, million-row cohorts on 3 local custodians (issue 22).

For every size asked (``--rows``, default 30,000, 300,000 and 1,000,000 patients from 3
hospitals, each with a ``labs`` row): the import of both tables (``tessera table
import``'s workflow: two streamed passes over each CSV, upload in blocks), the ten
``bench/sql.py`` queries, each checked against DuckDB on the same CSVs (the plaintext
reference, timed too), with the MIN/MAX queries (6 and 7) and COUNT WHERE (1) called out;
then ``recommend`` (k = 100, 100 treatments, local mode as ``bench/recommend.py``) at
each ``--recommend`` size, checked against the numpy oracle.  Per figure: the 1-minute
load average when it was measured (the machine may be shared), and the growth exponent
from one size to the next (``log(t2/t1) / log(n2/n1)``; 1 is linear).

Memory: the client (import and queries run in a child process: its peak resident set)
and each custodian node (its process plus its MPC party processes, resident sets summed
and sampled every 50 ms: a peak may be missed by a few ms, never overstated).

    .venv/bin/python bench/scale.py [--rows 30000,300000,1000000] [--recommend 20000,100000]
                                    [--skip-recommend] [--json]

The figures before the change (issue 22, measured on this machine with ``bench/sql.py``
and ``bench/recommend.py``) are printed next to ours; the targets are those at 1M rows.
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from envelope import Run, emit, figure, progress_to_stderr, result
from sql import PASSPHRASE, QUERIES, _agree, _duckdb, _environment, _import
from tessera.config import Environment
from tessera.samples.cohort import write_cohort
from tessera.workflows.nodes import _known, stop_nodes

MINMAX = (6, 7)
COUNT_WHERE = 1
# issue 22: bench/sql.py and bench/recommend.py before the change (3 custodians, t = 1)
BEFORE: dict[int, dict[str, float]] = {
    30_000: {"import": 14.9, "median": 1.00, "minmax": 2.3, "count": 0.58},
    300_000: {"import": 157.5, "median": 4.3, "minmax": 27.5, "count": 1.8},
}
BEFORE_RECOMMEND = {20_000: 3.6, 100_000: 20.6}
TARGETS = {
    "import rows/s": 20_000.0,
    "median": 5.0,
    "minmax": 20.0,
    "count": 2.0,
    "client MB": 1536.0,
    "node MB": 1024.0,
}
TARGET_RECOMMEND = {20_000: 2.0, 100_000: 8.0}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# ----- memory ---------------------------------------------------------------------------
def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            out += [int(c) for c in text]
    except OSError:
        pass
    return out


class NodeMemory:
    """Peak resident set of every node with its party processes, sampled per phase."""

    def __init__(self, env: Environment) -> None:
        self.pids = {n.id: int((_known(env, n.id) or {}).get("pid", 0)) for n in env.nodes}
        self.phase = "import"
        self.peaks: dict[str, dict[int, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="node-memory")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            peaks = self.peaks.setdefault(self.phase, {})
            for node, pid in self.pids.items():
                if pid:
                    total = _rss_mb(pid) + sum(_rss_mb(c) for c in _children(pid))
                    peaks[node] = max(peaks.get(node, 0.0), total)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ----- the client, in its own process ----------------------------------------------------
def _client(home: str, paths: list[str], data: str, out: Any) -> None:
    """Import both tables, then run the ten queries; report times and peak memory."""
    from tessera.workflows.people import unlock
    from tessera.workflows.query import run_query

    env = Environment.load(Path(home))
    signer = unlock(env, "owner", PASSPHRASE, record=False)
    load = _load()
    t0 = time.perf_counter()
    _import(env, [Path(p) for p in paths], Path(data))
    out.put(("import", time.perf_counter() - t0, load))
    answers = []
    for sql in QUERIES:
        load = _load()
        t = time.perf_counter()
        got = run_query(env, sql, signer=signer)
        answers.append((time.perf_counter() - t, got["rows"], got["party_cpu_s"], load))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put(("queries", answers, peak))


def measure_size(rows: int, base: Path) -> dict[str, Any]:
    """Every figure at ``rows`` patients (and as many labs rows)."""
    data = base / "data"
    paths = write_cohort(data, rows, hospitals=3, seed=7)
    con = _duckdb(paths, data)
    duck = []
    for sql in QUERIES:
        t = time.perf_counter()
        want = [list(r) for r in con.execute(sql).fetchall()]
        duck.append((time.perf_counter() - t, want))
    con.close()
    env, _ = _environment(base / "home")
    memory = NodeMemory(env)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(
        target=_client, args=(str(env.home), [str(p) for p in paths], str(data), queue)
    )
    try:
        child.start()
        _, import_s, import_load = queue.get(timeout=7200)
        memory.phase = "queries"
        _, answers, client_mb = queue.get(timeout=7200)
        child.join(60)
    finally:
        if child.is_alive():
            child.kill()
        memory.stop()
        stop_nodes(env)
    queries = []
    for i, ((secure, got, cpu, load), (duck_s, want)) in enumerate(zip(answers, duck, strict=True)):
        queries.append(
            {
                "n": i + 1,
                "sql": QUERIES[i],
                "seconds": secure,
                "party_cpu_s": cpu,
                "duckdb_s": duck_s,
                "agrees": _agree(got, want),
                "load": load,
            }
        )
    return {
        "rows": rows,
        "import_s": import_s,
        "import_load": import_load,
        "queries": queries,
        "client_mb": client_mb,
        "node_mb": {phase: dict(p) for phase, p in memory.peaks.items()},
    }


def measure_recommend(rows: int, base: Path) -> dict[str, Any]:
    """``recommend`` at ``rows`` patients (local mode, as bench/recommend.py)."""
    import recommend as rec

    _, job, parts, patient = rec._setup(rows, 100, base / f"hiv{rows}")
    expected = rec._oracle(job, parts, patient, 100)
    inputs = rec._inputs(job, parts, patient, 100)
    load = _load()
    got, secure, _, phases = rec._secure(job, inputs, "tessera.mpc.knn", base / f"knn{rows}")
    return {
        "rows": rows,
        "seconds": secure,
        "agrees": got == expected,
        "phases": phases,
        "load": load,
    }


# ----- report --------------------------------------------------------------------------
def _growth(a: tuple[int, float], b: tuple[int, float]) -> float | None:
    (n1, t1), (n2, t2) = a, b
    if t1 <= 0 or t2 <= 0 or n1 == n2:
        return None
    return math.log(t2 / t1) / math.log(n2 / n1)


def _summary(size: dict[str, Any]) -> dict[str, float]:
    qs = size["queries"]
    nodes = size["node_mb"]
    return {
        "import": size["import_s"],
        "rows/s": size["rows"] / size["import_s"],  # as issue 22 counts: patients (+ labs)
        "median": statistics.median(q["seconds"] for q in qs),
        "minmax": max(qs[n - 1]["seconds"] for n in MINMAX),
        "count": qs[COUNT_WHERE - 1]["seconds"],
        "client MB": size["client_mb"],
        "node MB": max((v for p in nodes.values() for v in p.values()), default=0.0),
    }


def _print_size(size: dict[str, Any]) -> None:
    rows = size["rows"]
    s = _summary(size)
    before = BEFORE.get(rows, {})
    print(f"\n== {rows:,} patients (+ {rows:,} labs rows), 3 custodians (t = 1) ==")
    was = f" (before: {before['import']:.1f} s)" if before else ""
    print(
        f"import {s['import']:.1f} s, {s['rows/s']:,.0f} rows/s{was}; "
        f"load {size['import_load']:.1f}"
    )
    print(f"{'#':>2} {'secure s':>9} {'cpu s':>6} {'duckdb s':>9} {'load':>5}  ok  query")
    for q in size["queries"]:
        print(
            f"{q['n']:>2} {q['seconds']:9.2f} {q['party_cpu_s']:6.2f} {q['duckdb_s']:9.4f} "
            f"{q['load']:5.1f}  {'yes' if q['agrees'] else 'NO '} {q['sql'][:60]}"
        )
    for key, label in (("median", "median of the ten"), ("minmax", "MIN/MAX (slower of 6, 7)")):
        was = f" (before: {before[key]:.2f} s)" if before else ""
        print(f"{label}: {s[key]:.2f} s{was}")
    was = f" (before: {before['count']:.2f} s)" if before else ""
    print(f"COUNT WHERE (1): {s['count']:.2f} s{was}")
    nodes = ", ".join(
        f"{phase}: " + " ".join(f"node {n} {mb:.0f}" for n, mb in sorted(p.items()))
        for phase, p in size["node_mb"].items()
    )
    print(f"peak memory MB: client {s['client MB']:.0f}; {nodes}")


def _rows_of(sizes: list[dict[str, Any]], recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for size in sizes:
        s = _summary(size)
        rows, before = size["rows"], BEFORE.get(size["rows"], {})
        group = f"{rows:,} patients"
        top = rows >= 1_000_000

        def add(what: str, key: str, value: float, unit: str, target: str | None) -> None:
            base = figure("before", before[key], unit) if key in before else None
            met = None
            if target is not None:
                met = value >= TARGETS[key] if key == "import rows/s" else value <= TARGETS[key]
            out.append(
                result(what, figure("ours", value, unit), base, group=group, target=target, met=met)
            )

        add("import (both tables)", "import", s["import"], "s", None)
        add(
            "import rows/s",
            "import rows/s",
            s["rows/s"],
            "rows/s",
            ">= 20000 rows/s" if top else None,
        )
        add("median of the ten queries", "median", s["median"], "s", "<= 5 s" if top else None)
        add("MIN/MAX query", "minmax", s["minmax"], "s", "<= 20 s" if top else None)
        add("COUNT WHERE", "count", s["count"], "s", "<= 2 s" if top else None)
        add("client peak memory", "client MB", s["client MB"], "MB", "<= 1536 MB" if top else None)
        add(
            "largest node peak memory", "node MB", s["node MB"], "MB", "<= 1024 MB" if top else None
        )
        agree = all(q["agrees"] for q in size["queries"])
        out.append(
            result(
                "answers equal DuckDB's",
                figure("queries agreeing", sum(q["agrees"] for q in size["queries"]), ""),
                group=group,
                target="10",
                met=agree,
            )
        )
    for rec in recs:
        rows = rec["rows"]
        before = BEFORE_RECOMMEND.get(rows)
        target = TARGET_RECOMMEND.get(rows)
        out.append(
            result(
                f"recommend at {rows:,} patients (k = 100, 100 treatments)",
                figure("ours", rec["seconds"], "s", {"load": rec["load"]}),
                figure("before", before, "s") if before is not None else None,
                group="recommend",
                target=f"<= {target:g} s" if target is not None else None,
                met=None if target is None else (rec["seconds"] <= target and rec["agrees"]),
            )
        )
    return out


def _growths(sizes: list[dict[str, Any]], recs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    keys = ("import", "median", "minmax", "count", "client MB", "node MB")
    sums = [(size["rows"], _summary(size)) for size in sizes]
    for a, b in itertools.pairwise(sums):
        for key in keys:
            g = _growth((a[0], a[1][key]), (b[0], b[1][key]))
            out.setdefault(key, []).append({"from": a[0], "to": b[0], "exponent": g})
    for a, b in itertools.pairwise(recs):
        g = _growth((a["rows"], a["seconds"]), (b["rows"], b["seconds"]))
        out.setdefault("recommend", []).append({"from": a["rows"], "to": b["rows"], "exponent": g})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="30000,300000,1000000", help="patients per run")
    ap.add_argument("--recommend", default="20000,100000", help="recommend sizes")
    ap.add_argument("--skip-recommend", action="store_true")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    a = ap.parse_args()
    sizes_asked = [int(x) for x in a.rows.split(",") if x.strip()]
    rec_asked = [] if a.skip_recommend else [int(x) for x in a.recommend.split(",") if x.strip()]
    run = Run("scale", __doc__, {"rows": sizes_asked, "recommend": rec_asked})
    sizes: list[dict[str, Any]] = []
    recs: list[dict[str, Any]] = []
    with progress_to_stderr(a.json):
        for rows in sizes_asked:
            with tempfile.TemporaryDirectory(prefix="tessera-bench-scale-") as tmp:
                sizes.append(measure_size(rows, Path(tmp)))
            _print_size(sizes[-1])
        with tempfile.TemporaryDirectory(prefix="tessera-bench-scale-knn-") as tmp:
            for rows in rec_asked:
                recs.append(measure_recommend(rows, Path(tmp)))
                r = recs[-1]
                before = BEFORE_RECOMMEND.get(rows)
                was = f" (before: {before:.1f} s)" if before else ""
                print(
                    f"\nrecommend at {rows:,} patients: {r['seconds']:.2f} s{was}, equal to the "
                    f"oracle: {'yes' if r['agrees'] else 'NO'}; load {r['load']:.1f}; "
                    f"party 0: {r['phases']}"
                )
        growth = _growths(sizes, recs)
        for key, steps in growth.items():
            text = ", ".join(
                f"{s['from']:,}->{s['to']:,}: "
                + ("n/a" if s["exponent"] is None else f"{s['exponent']:.2f}")
                for s in steps
            )
            print(f"growth exponent of {key}: {text}")
    bad = sum(not q["agrees"] for s in sizes for q in s["queries"]) + sum(
        not r["agrees"] for r in recs
    )
    if a.json:
        emit(
            run.document(
                _rows_of(sizes, recs),
                [f"{s['rows']:,} patients: import load {s['import_load']:.1f}" for s in sizes],
                sizes=sizes,
                recommend=recs,
                growth=growth,
            )
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""The gateway under load: metadata routes at many clients, and with secure queries.

Usage: python bench/api.py [--clients 50,200] [--seconds 8] [--queries 20]
                           [--max-queries 4] [--meta-clients 50] [--nodes-nice N]
                           [--quick] [--json] [--dir DIR]

Everything runs in this one run on this machine, the load generator included (this
process: one asyncio loop, uvloop when installed, plain HTTP/1.1 keep-alive connections
over asyncio streams, one request outstanding per connection, so the generator costs
little CPU next to the servers it shares the cores with):

* ``baseline``  a minimal FastAPI/uvicorn app (same uvicorn settings: uvloop and
                httptools when installed) answering ``GET /api/v1/tables`` with a
                static JSON body of the same size as ours: no token, no audit, no
                catalogue (what the framework alone can do here);
* ``ours``      ``python -m tessera.server`` (what ``tessera serve`` starts) over an
                environment with three custodian nodes and a cohort: ``GET
                /api/v1/tables`` with a researcher's token, each request checked,
                throttled and recorded in the signed audit log, at each ``--clients``;
* ``mixed``     ``--meta-clients`` metadata clients while ``--queries`` clients each
                keep one ``SELECT COUNT(*)`` outstanding (a burst of all of them at
                once first, then each retries after ``Retry-After`` when refused):
                metadata p95, queries answered, refused (503 + Retry-After) and
                timed out.  ``--nodes-nice N`` then runs it again with the custodian
                nodes' threads at nice N, standing in for custodians on machines of
                their own (here they share the two cores with the gateway).

Latencies are per request, from writing it to reading the last byte of the answer,
after a warm-up.  Targets (issue 17): ours at 200 clients >= 1,000 requests/s, p95 <=
250 ms, no errors; mixed: metadata p95 <= 300 ms, excess queries 503 with Retry-After,
no timeouts.  ``--quick``: a smoke test of every phase in a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envelope import Run, emit, figure, progress_to_stderr, result

PASSPHRASE = b"bench api passphrase"
SQL = "SELECT COUNT(*) FROM patients"
TABLES = "/api/v1/tables"
TIMEOUT_S = 60.0  # a request not answered within this counts as timed out
TARGETS = {"rps_200": 1000.0, "p95_200_ms": 250.0, "mixed_p95_ms": 300.0}


@dataclass
class Stats:
    """Latencies (s) and outcomes of one phase's requests."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    timeouts: int = 0

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return 1000 * lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

        bad = sum(n for s, n in self.statuses.items() if s != 200)
        return {
            "requests": len(lat),
            "rps": len(lat) / seconds,
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "errors": self.errors + self.timeouts + bad,
            "timeouts": self.timeouts,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


# -- servers -----------------------------------------------------------------------


def _serve_baseline(body_file: Path) -> None:
    """The baseline server (a child process): a static body, nothing else."""
    import uvicorn
    from fastapi import FastAPI, Response

    body = body_file.read_bytes()
    app = FastAPI()

    @app.get(TABLES)
    async def tables() -> Response:
        return Response(body, media_type="application/json")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(f"baseline listening on http://127.0.0.1:{sock.getsockname()[1]}/", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


def _start(cmd: list[str], log: Path) -> tuple[subprocess.Popen[str], str]:
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if " listening on " not in line:
        proc.kill()
        proc.wait()
        raise SystemExit(f"server did not start: {line}{log.read_text()[-2000:]}")
    return proc, line.split(" on ", 1)[1].strip()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _setup(work: Path, rows: int) -> tuple[Any, str]:
    """An environment with a cohort imported and a researcher; (env, her token)."""
    from tessera.samples.cohort import write_cohort
    from tessera.workflows.environment import init_environment
    from tessera.workflows.people import unlock
    from tessera.workflows.tables import import_csv
    from tessera.workflows.users import add_user

    paths = write_cohort(work / "data", rows, hospitals=3, seed=17)
    env = init_environment(work / "home", nodes=3, passphrase=PASSPHRASE)
    for p in paths:
        schema = work / "data" / "patients.schema.yaml"
        import_csv(env, p, "patients", schema_path=schema, hospital=p.stem)
    owner = unlock(env, "owner", PASSPHRASE)
    return env, add_user(env.home, "rita", "researcher", [owner])


# -- load --------------------------------------------------------------------------


def _request(url: str, path: str, token: str | None) -> tuple[str, int, bytes]:
    host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    raw = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode()
    return host, int(port), raw


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 answer (Content-Length bodies only); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(head[9:12])


async def _client(target: tuple[str, int, bytes], start: float, until: float, stats: Stats) -> None:
    """One keep-alive connection sending requests back to back until ``until``."""
    host, port, raw = target
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < until:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                t0 = time.perf_counter()
                writer.write(raw)
                status = await _answer(reader)
                t1 = time.perf_counter()
        except TimeoutError:
            stats.timeouts += 1
            _close(writer)
            writer = None
            continue
        except (OSError, asyncio.IncompleteReadError, ValueError):
            stats.errors += 1
            _close(writer)
            writer = None
            await asyncio.sleep(0.01)
            continue
        if t0 >= start:
            stats.latencies.append(t1 - t0)
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
    _close(writer)


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()


async def _load(
    url: str, token: str | None, clients: int, seconds: float, warm_s: float
) -> dict[str, Any]:
    """``clients`` connections asking for the table list for ``warm_s`` + ``seconds``."""
    target = _request(url, TABLES, token)
    start = time.perf_counter() + warm_s
    until = start + seconds
    stats = Stats()
    cpu = time.process_time()
    await asyncio.gather(*(_client(target, start, until, stats) for _ in range(clients)))
    out = stats.summary(seconds)
    out["clients"] = clients
    out["generator_cpu_s"] = time.process_time() - cpu
    return out


@dataclass
class QueryStats:
    """How the secure queries went."""

    burst_answered: int = 0
    burst_refused: int = 0
    answered: int = 0
    refused: int = 0
    refused_without_retry_after: int = 0
    timeouts: int = 0
    other: dict[str, int] = field(default_factory=dict)
    answer_s: list[float] = field(default_factory=list)
    refusal_ms_max: float = 0.0


async def _one_query(client: Any, stats: QueryStats, burst: bool) -> float:
    """One POST /query; the seconds to wait before the next (Retry-After when refused)."""
    import httpx

    t0 = time.perf_counter()
    try:
        resp = await client.post("api/v1/query", json={"sql": SQL})
    except httpx.TimeoutException:
        stats.timeouts += 1
        return 0.0
    took = time.perf_counter() - t0
    if resp.status_code == 200:
        stats.answered += 1
        stats.burst_answered += burst
        stats.answer_s.append(took)
        return 0.0
    if resp.status_code == 503 and set(resp.json()) == {"error", "message"}:
        stats.refused += 1
        stats.burst_refused += burst
        stats.refusal_ms_max = max(stats.refusal_ms_max, 1000 * took)
        if "retry-after" not in resp.headers:
            stats.refused_without_retry_after += 1
            return 1.0
        return float(resp.headers["retry-after"])
    doc = resp.json()
    key = f"{resp.status_code} {doc.get('error', '')}: {str(doc.get('message', ''))[:80]}"
    stats.other[key] = stats.other.get(key, 0) + 1
    return 1.0


async def _query_client(
    url: str, token: str, until: float, gate: asyncio.Event, stats: QueryStats
) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=TIMEOUT_S) as client:
        await gate.wait()  # the burst: every client at once
        wait = await _one_query(client, stats, burst=True)
        while time.perf_counter() + wait < until:
            await asyncio.sleep(wait)
            wait = await _one_query(client, stats, burst=False)


async def _mixed(
    url: str, token: str, meta_clients: int, queries: int, seconds: float
) -> dict[str, Any]:
    """Metadata load while ``queries`` clients keep queries outstanding."""
    warm_s = 1.0
    until = time.perf_counter() + warm_s + seconds
    qstats, gate = QueryStats(), asyncio.Event()
    tasks = [_query_client(url, token, until, gate, qstats) for _ in range(queries)]
    load = asyncio.ensure_future(_load(url, token, meta_clients, seconds, warm_s))
    await asyncio.sleep(0.3)  # the query clients are connected, the load is running
    gate.set()
    await asyncio.gather(*tasks)
    meta = await load
    q = qstats.__dict__.copy()
    answers = sorted(q.pop("answer_s"))
    q["answer_p50_s"] = answers[len(answers) // 2] if answers else float("nan")
    return {"metadata": meta, "queries": {"clients": queries, **q}}


# -- the run -----------------------------------------------------------------------


def _phase(url: str, token: str | None, clients: list[int], args: Any) -> dict[str, Any]:
    return {
        str(c): asyncio.run(_load(url, token, c, args.seconds, args.warm_s), debug=False)
        for c in clients
    }


def _renice_nodes(home: Path, gateway: int, nice: int) -> int:
    """Lower the priority of every thread of the custodian nodes of ``home`` and their
    children (standing in for custodians on machines of their own); how many tasks."""
    parent, cmdline = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parent[int(entry.name)] = int(stat[1])
                cmdline[int(entry.name)] = (entry / "cmdline").read_bytes()
    chosen = {p for p, c in cmdline.items() if str(home).encode() in c and p != gateway}
    while True:
        more = {p for p, pp in parent.items() if pp in chosen} - chosen - {gateway}
        if not more:
            break
        chosen |= more
    tasks = 0
    for pid in chosen:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
                tasks += 1
    return tasks


def _with_cpu(pid: int, run: Any) -> tuple[Any, float]:
    cpu = _cpu_s(pid)
    return run(), _cpu_s(pid) - cpu


def _measure(work: Path, args: Any) -> dict[str, Any]:
    import httpx

    from tessera.workflows.nodes import stop_nodes

    env, token = _setup(work, args.rows)
    clients = [int(c) for c in args.clients.split(",")]
    report: dict[str, Any] = {"setup": _setup_facts(args)}
    try:
        cmd = [sys.executable, "-m", "tessera.server", "--home", str(env.home), "--port", "0"]
        proc, url = _start([*cmd, "--max-queries", str(args.max_queries)], work / "ours.err")
        try:
            body = httpx.get(url + TABLES[1:], headers={"Authorization": f"Bearer {token}"})
            (work / "body.json").write_bytes(body.content)
            first = httpx.post(
                url + "api/v1/query",
                json={"sql": SQL},
                timeout=300,
                headers={"Authorization": f"Bearer {token}"},
            )  # nodes start
            if first.status_code != 200:
                raise SystemExit(f"the first query failed: {first.text}")
            report["body_bytes"] = len(body.content)
            report["ours"], cpu = _with_cpu(proc.pid, lambda: _phase(url, token, clients, args))
            report["ours_server_cpu_s"] = cpu
            report["mixed"], cpu = _with_cpu(
                proc.pid,
                lambda: asyncio.run(
                    _mixed(url, token, args.meta_clients, args.queries, args.seconds)
                ),
            )
            report["mixed_server_cpu_s"] = cpu
            if args.nodes_nice:
                report["nodes_reniced"] = _renice_nodes(env.home, proc.pid, args.nodes_nice)
                report["mixed_nodes_niced"] = asyncio.run(
                    _mixed(url, token, args.meta_clients, args.queries, args.seconds)
                )
        finally:
            _stop(proc)
        base_cmd = [sys.executable, __file__, "--serve-baseline", str(work / "body.json")]
        proc, url = _start(base_cmd, work / "baseline.err")
        try:
            report["baseline"], cpu = _with_cpu(proc.pid, lambda: _phase(url, None, clients, args))
            report["baseline_server_cpu_s"] = cpu
        finally:
            _stop(proc)
    finally:
        stop_nodes(env)
    return report


def _setup_facts(args: Any) -> dict[str, Any]:
    def has(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    return {
        "cpus": os.cpu_count(),
        "uvloop": has("uvloop"),
        "httptools": has("httptools"),
        "seconds": args.seconds,
        "max_queries": args.max_queries,
        "baseline": "a minimal FastAPI/uvicorn app serving a static JSON body of the same "
        "size, same machine, same run (no token, no audit)",
        "generator": "this process: asyncio streams, HTTP/1.1 keep-alive, one request "
        "outstanding per connection; it shares the cores with the servers",
    }


def _verdict(report: dict[str, Any]) -> dict[str, bool]:
    ours = report["ours"].get("200") or report["ours"][max(report["ours"], key=int)]
    mixed = report["mixed"]
    q = mixed["queries"]
    return {
        "rps_200": ours["rps"] >= TARGETS["rps_200"],
        "p95_200": ours["p95_ms"] <= TARGETS["p95_200_ms"],
        "no_errors": ours["errors"] == 0 and mixed["metadata"]["errors"] == 0,
        "mixed_p95": mixed["metadata"]["p95_ms"] <= TARGETS["mixed_p95_ms"],
        "excess_queries_503_with_retry_after": q["refused"] > 0
        and q["refused_without_retry_after"] == 0,
        "no_query_timeouts": q["timeouts"] == 0,
        "queries_answered_or_503_only": not q["other"],
    }


def _print(report: dict[str, Any]) -> None:
    facts = report["setup"]
    print(
        f"gateway load, {facts['cpus']} CPUs shared with the load generator; "
        f"uvloop {facts['uvloop']}, httptools {facts['httptools']}"
    )
    print(f"baseline: {facts['baseline']}; body {report['body_bytes']} bytes")
    head = f"{'GET /api/v1/tables':<22} {'clients':>7} {'req/s':>8} {'p50 ms':>8} "
    print(head + f"{'p95 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for name in ("baseline", "ours"):
        for c, r in report[name].items():
            print(
                f"{name:<22} {c:>7} {r['rps']:8.0f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} "
                f"{r['p99_ms']:8.1f} {r['errors']:>6}"
            )
    for c, r in report["ours"].items():
        b = report["baseline"][c]
        print(
            f"{'ours/baseline':<22} {c:>7} {r['rps'] / b['rps']:8.2f} "
            f"{r['p50_ms'] / b['p50_ms']:8.2f} {r['p95_ms'] / b['p95_ms']:8.2f} "
            f"{r['p99_ms'] / b['p99_ms']:8.2f}"
        )
    m, q = report["mixed"]["metadata"], report["mixed"]["queries"]
    print(
        f"\nwith {q['clients']} query clients (max_queries {facts['max_queries']}): "
        f"metadata {m['clients']} clients {m['rps']:.0f} req/s, p50 {m['p50_ms']:.1f} ms, "
        f"p95 {m['p95_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms, errors {m['errors']}"
    )
    print(
        f"  burst: {q['burst_answered']} answered, {q['burst_refused']} refused 503; "
        f"sustained: {q['answered']} answered (p50 {q['answer_p50_s']:.2f} s), "
        f"{q['refused']} refused 503 ({q['refused_without_retry_after']} without "
        f"Retry-After, slowest refusal {q['refusal_ms_max']:.0f} ms), "
        f"{q['timeouts']} timeouts, other {q['other'] or 'none'}"
    )
    _print_niced(report)
    print(
        f"server CPU s: baseline {report['baseline_server_cpu_s']:.1f}, ours "
        f"{report['ours_server_cpu_s']:.1f}, mixed {report['mixed_server_cpu_s']:.1f}"
    )
    print("targets met: " + ", ".join(f"{k} {v}" for k, v in report["verdict"].items()))


def _print_niced(report: dict[str, Any]) -> None:
    niced = report.get("mixed_nodes_niced")
    if not niced:
        return
    n, nq = niced["metadata"], niced["queries"]
    print(
        f"  again, the nodes' {report['nodes_reniced']} threads reniced: metadata "
        f"{n['rps']:.0f} req/s, p50 {n['p50_ms']:.1f} ms, p95 {n['p95_ms']:.1f} ms, "
        f"p99 {n['p99_ms']:.1f} ms, errors {n['errors']}; queries {nq['answered']} "
        f"answered (p50 {nq['answer_p50_s']:.2f} s), {nq['refused']} refused 503, "
        f"{nq['timeouts']} timeouts, other {nq['other'] or 'none'}"
    )


def results(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the common JSON shape (targets of issue 17)."""
    rows = []
    for c, ours in report["ours"].items():
        base = report["baseline"][c]
        at_200 = c == "200"
        rows.append(
            result(
                f"GET /api/v1/tables, {c} clients: throughput",
                figure("gateway", ours["rps"], "req/s", {"errors": ours["errors"]}),
                figure("minimal FastAPI app", base["rps"], "req/s", {"errors": base["errors"]}),
                group="metadata route",
                target=f">= {TARGETS['rps_200']:,.0f} req/s" if at_200 else None,
                met=ours["rps"] >= TARGETS["rps_200"] if at_200 else None,
            )
        )
        rows.append(
            result(
                f"GET /api/v1/tables, {c} clients: p95 latency",
                figure(
                    "gateway",
                    ours["p95_ms"],
                    "ms",
                    {"p50 ms": ours["p50_ms"], "p99 ms": ours["p99_ms"]},
                ),
                figure(
                    "minimal FastAPI app",
                    base["p95_ms"],
                    "ms",
                    {"p50 ms": base["p50_ms"], "p99 ms": base["p99_ms"]},
                ),
                group="metadata route",
                target=f"<= {TARGETS['p95_200_ms']:.0f} ms" if at_200 else None,
                met=ours["p95_ms"] <= TARGETS["p95_200_ms"] if at_200 else None,
            )
        )
    rows += _mixed_rows(report["mixed"], "")
    if report.get("mixed_nodes_niced"):
        rows += _mixed_rows(report["mixed_nodes_niced"], ", custodian nodes reniced")
    return rows


def _mixed_rows(mixed: dict[str, Any], how: str) -> list[dict[str, Any]]:
    """The rows of one mixed phase: metadata latency and what became of the queries."""
    meta, q = mixed["metadata"], mixed["queries"]
    group = f"{meta['clients']} metadata clients with {q['clients']} query clients{how}"
    return [
        result(
            "metadata p95 latency",
            figure(
                "gateway",
                meta["p95_ms"],
                "ms",
                {"p50 ms": meta["p50_ms"], "req/s": meta["rps"], "errors": meta["errors"]},
            ),
            group=group,
            target=f"<= {TARGETS['mixed_p95_ms']:.0f} ms",
            met=meta["p95_ms"] <= TARGETS["mixed_p95_ms"],
        ),
        result(
            "secure queries answered",
            figure("answered", q["answered"], "queries", {"p50 s": q["answer_p50_s"]}),
            group=group,
        ),
        result(
            "excess queries refused with 503 and Retry-After",
            figure(
                "refused",
                q["refused"],
                "queries",
                {"without Retry-After": q["refused_without_retry_after"]},
            ),
            group=group,
            target="> 0, all with Retry-After",
            met=q["refused"] > 0 and q["refused_without_retry_after"] == 0,
        ),
        result(
            "queries timed out or failed otherwise",
            figure(
                "timed out",
                q["timeouts"],
                "queries",
                {"other failures": sum(q["other"].values())},
            ),
            group=group,
            target="0",
            met=q["timeouts"] == 0 and not q["other"],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", default="50,200")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warm-s", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--max-queries", type=int, default=4)
    parser.add_argument("--meta-clients", type=int, default=50)
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument(
        "--nodes-nice",
        type=int,
        default=0,
        help="then the mixed phase again with the nodes at this nice value",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test (seconds)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--serve-baseline", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline:
        _serve_baseline(args.serve_baseline)
        return 0
    if args.quick:
        args.clients, args.seconds, args.warm_s = "5,20", 1.0, 0.2
        args.queries, args.max_queries, args.meta_clients, args.rows = 3, 1, 5, 60
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    names = ("clients", "seconds", "warm_s", "queries", "max_queries", "meta_clients", "rows")
    run = Run("api", __doc__, {n: getattr(args, n) for n in (*names, "nodes_nice", "quick")})
    work = Path(tempfile.mkdtemp(prefix="tessera-bench-api-", dir=args.dir))
    try:
        with progress_to_stderr(args.json):
            report = _measure(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["verdict"] = _verdict(report)
    if args.json:
        notes = [
            f"baseline: {report['setup']['baseline']}",
            f"load generator: {report['setup']['generator']}",
        ]
        emit(run.document(results(report), notes, **report))
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

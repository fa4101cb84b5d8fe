"""Audit log speed: appending with signing batched per tree head, and verifying 1M events.

Targets (issue 9): append >= 5,000 events/s; verify 1,000,000 events in <= 30 s.
Issue 17 (throughput): one event per append call, as the gateway and the commands
append, each durable (fdatasync): one signed head per event (baseline) against one per
256 events (``HEAD_EVERY``, the gateway's and the commands' batching), in events/s and
in bytes the log grows per event.

* append baseline (same run): one signed tree head per event (no batching);
* verify baseline (same run): reading and SHA-256 hashing the record file once, the
  floor any verifier pays; the ratio shows what checking sequence numbers, leaf hashes,
  the Merkle tree and every signed head adds.

``--json`` prints one JSON document (bench/envelope.py) on stdout instead of the text.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from envelope import Run, emit, figure, progress_to_stderr, result
from tessera.audit import AuditLog, MldsaSigner
from tessera.core.audit_sink import AuditEvent

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def events(n: int, offset: int = 0) -> list[AuditEvent]:
    """Realistic events: gets, queries, logins with addresses, entities and details."""
    out = []
    for i in range(offset, offset + n):
        kind = i % 3
        out.append(
            AuditEvent(
                ("vault.get", "query", "login")[kind],
                user=f"user{i % 200:03d}",
                role="researcher",
                address=f"10.0.{i % 200}.{i % 250}",
                client="tessera-cli/0.1",
                source=f"node-{i % 5 + 1}",
                entity=f"obj-{i % 5000}" if kind != 2 else "",
                entity_type="object" if kind != 2 else "",
                purpose="HRESCH",
                recorded=T0 + timedelta(milliseconds=i),
                detail={"job": f"job-{i // 4}", "rows": i % 997},
            )
        )
    return out


def bench_append(folder: Path, signer: MldsaSigner, n: int, batch: int) -> float:
    """Events per second appending ``n`` events, ``batch`` per signed head."""
    log = AuditLog.create(folder, "bench", signer.public_key, signer=signer)
    todo = events(n)
    start = time.perf_counter()
    for i in range(0, n, batch):
        log.append(todo[i : i + batch])
    return n / (time.perf_counter() - start)


def bench_per_event(
    folder: Path, signer: MldsaSigner, n: int, head_every: int, *, durable: bool = True
) -> tuple[float, float]:
    """(events/s, bytes the log grows per event) appending ``n`` events one call each
    (fdatasync-ed when ``durable``), a signed head every ``head_every`` events (and one
    at close)."""
    log = AuditLog.create(
        folder, "bench", signer.public_key, signer=signer, head_every=head_every, durable=durable
    )
    todo = events(n)
    before = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    start = time.perf_counter()
    for event in todo:
        log.append([event])
    log.close()
    took = time.perf_counter() - start
    after = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return n / took, (after - before) / n


def per_event_report(scratch: Path, signer: MldsaSigner, n: int) -> list[dict[str, Any]]:
    """Print the issue-17 comparison: a head per event vs one per 256 events; its rows."""
    rows = []
    for durable in (True, False):
        mode = "durable (fdatasync each)" if durable else "page cache only       "
        tag = "d" if durable else "c"
        base, base_bytes = bench_per_event(scratch / f"{tag}1", signer, n, 1, durable=durable)
        ours, our_bytes = bench_per_event(scratch / f"{tag}256", signer, n, 256, durable=durable)
        print(
            f"{mode}, head per event (baseline): {base:9,.0f} events/s, "
            f"{base_bytes:6,.0f} bytes/event"
        )
        print(
            f"{mode}, head per 256 events:       {ours:9,.0f} events/s, "
            f"{our_bytes:6,.0f} bytes/event"
        )
        print(f"  ratio: x{ours / base:.1f} events/s, x{base_bytes / our_bytes:.1f} fewer bytes")
        group = f"{n:,} events, one append call each, " + (
            "durable (fdatasync per append)" if durable else "page cache only"
        )
        rows += [
            result(
                "append rate",
                figure("signed head per 256 events", ours, "events/s"),
                figure("signed head per event", base, "events/s"),
                group=group,
            ),
            result(
                "log growth per event",
                figure("signed head per 256 events", our_bytes, "bytes"),
                figure("signed head per event", base_bytes, "bytes"),
                ratio_of="baseline / ours",
                group=group,
            ),
        ]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="log size to verify")
    parser.add_argument("--batch", type=int, default=1000, help="events per signed tree head")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder")
    parser.add_argument(
        "--per-event-only",
        action="store_true",
        help="only the one-event-per-append comparison (head per event vs per 256)",
    )
    parser.add_argument("--per-event", type=int, default=5000, help="events for that comparison")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    names = ("events", "batch", "per_event_only", "per_event")
    run = Run("audit", __doc__, {n: getattr(args, n) for n in names})
    with progress_to_stderr(args.json):
        rows = measure(args)
    if args.json:
        emit(run.document(rows))
    return 0


def verify_report(folder: Path, signer: MldsaSigner, n: int) -> list[dict[str, Any]]:
    """Build an ``n``-event log, verify it against reading and hashing its records; print
    the figures, return the rows."""
    log = AuditLog.create(folder, "bench", signer.public_key, signer=signer)
    start = time.perf_counter()
    chunk = 20_000
    for i in range(0, n, chunk):
        log.append(events(min(chunk, n - i), i))
    built = time.perf_counter() - start
    size = (log.folder / "records.jsonl").stat().st_size
    heads = len(log.heads())
    print(
        f"built a {n:,}-event log ({size / 1e9:.2f} GB, "
        f"{heads} signed heads) in {built:.1f} s "
        f"({n / built:,.0f} events/s)"
    )

    start = time.perf_counter()
    digest = hashlib.sha256()
    with open(log.folder / "records.jsonl", "rb") as fh:
        while block := fh.read(32 << 20):
            digest.update(block)
    floor = time.perf_counter() - start
    start = time.perf_counter()
    report = log.verify()
    took = time.perf_counter() - start
    assert report.ok and report.entries == n, report
    print(f"read + SHA-256 of the records (baseline floor): {floor:6.2f} s")
    print(
        f"verify {n:,} events:                 {took:6.2f} s "
        f"(x{took / floor:.1f} the floor; {n / took:,.0f} events/s; "
        f"target <= 30 s for 1M: {'ok' if took * 1_000_000 / n <= 30 else 'MISSED'})"
    )
    per_million = took * 1_000_000 / n
    return [
        result(
            f"build a {n:,}-event log ({chunk:,} events per append)",
            figure("append", n / built, "events/s", {"GB": size / 1e9}),
            group="batched appends and verification",
        ),
        result(
            f"verify {n:,} events",
            figure("AuditLog.verify", took, "s", {"s per million": per_million}),
            figure("read + SHA-256 of the records", floor, "s"),
            group="batched appends and verification",
            target="<= 30 s per 1,000,000",
            met=per_million <= 30,
        ),
    ]


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Print the figures as measured; the rows of the JSON document."""
    scratch = Path(tempfile.mkdtemp(prefix="tessera-bench-audit-", dir=args.dir))
    signer = MldsaSigner.generate()
    try:
        rows = per_event_report(scratch, signer, args.per_event)
        if args.per_event_only:
            return rows
        base = bench_append(scratch / "one", signer, 300, 1)
        ours = bench_append(scratch / "batched", signer, 50_000, args.batch)
        print(f"append, one signed head per event (baseline): {base:10,.0f} events/s")
        print(
            f"append, one head per {args.batch} events:       {ours:10,.0f} events/s "
            f"(x{ours / base:.1f}; target >= 5,000: {'ok' if ours >= 5000 else 'MISSED'})"
        )
        rows.append(
            result(
                f"append in batches of {args.batch:,} (50,000 events; baseline 300)",
                figure(f"signed head per {args.batch:,} events", ours, "events/s"),
                figure("signed head per event", base, "events/s"),
                group="batched appends and verification",
                target=">= 5,000 events/s",
                met=ours >= 5000,
            )
        )

        return rows + verify_report(scratch / "big", signer, args.events)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

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


def per_event_report(scratch: Path, signer: MldsaSigner, n: int) -> None:
    """Print the issue-17 comparison: a head per event vs one per 256 events."""
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
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="tessera-bench-audit-", dir=args.dir))
    signer = MldsaSigner.generate()
    try:
        per_event_report(scratch, signer, args.per_event)
        if args.per_event_only:
            return 0
        base = bench_append(scratch / "one", signer, 300, 1)
        ours = bench_append(scratch / "batched", signer, 50_000, args.batch)
        print(f"append, one signed head per event (baseline): {base:10,.0f} events/s")
        print(
            f"append, one head per {args.batch} events:       {ours:10,.0f} events/s "
            f"(x{ours / base:.1f}; target >= 5,000: {'ok' if ours >= 5000 else 'MISSED'})"
        )

        log = AuditLog.create(scratch / "big", "bench", signer.public_key, signer=signer)
        start = time.perf_counter()
        chunk = 20_000
        for i in range(0, args.events, chunk):
            log.append(events(min(chunk, args.events - i), i))
        built = time.perf_counter() - start
        size = (log.folder / "records.jsonl").stat().st_size
        print(
            f"built a {args.events:,}-event log ({size / 1e9:.2f} GB, "
            f"{len(log.heads())} signed heads) in {built:.1f} s "
            f"({args.events / built:,.0f} events/s)"
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
        assert report.ok and report.entries == args.events, report
        print(f"read + SHA-256 of the records (baseline floor): {floor:6.2f} s")
        print(
            f"verify {args.events:,} events:                 {took:6.2f} s "
            f"(x{took / floor:.1f} the floor; {args.events / took:,.0f} events/s; "
            f"target <= 30 s for 1M: {'ok' if took * 1_000_000 / args.events <= 30 else 'MISSED'})"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

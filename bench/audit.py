"""Audit log speed: appending with signing batched per tree head, and verifying 1M events.

Targets (issue 9): append >= 5,000 events/s; verify 1,000,000 events in <= 30 s.

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="log size to verify")
    parser.add_argument("--batch", type=int, default=1000, help="events per signed tree head")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="tessera-bench-audit-", dir=args.dir))
    signer = MldsaSigner.generate()
    try:
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

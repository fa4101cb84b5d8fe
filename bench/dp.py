"""What the DP layer adds to one secure query, against a minimal secure query.

Baseline (same run): a 3-party MPyC program (local parties, -M3) that secret-shares
30,000 values and reveals their sum -- the floor of any secure aggregate query here.
Ours: everything the DP layer does for one GROUP BY query with COUNT/AVG/STDDEV over 4
groups on 3 custodians: plan_release, reserve + commit in the SQLite ledger, three
custodians' sample_noise_share (in-process, serial), postprocess.

Run: .venv/bin/python bench/dp.py [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from envelope import Run, emit, figure, progress_to_stderr, result
from tessera.dp import Aggregate, Ledger, Policy, plan_release, postprocess, sample_noise_share

MPC_PROGRAM = """
from mpyc.runtime import mpc
secint = mpc.SecInt(32)
async def main():
    await mpc.start()
    xs = [secint(i % 100) for i in range(30000)] if mpc.pid == 0 else [secint(None)] * 30000
    xs = mpc.input(xs, senders=0)
    print(await mpc.output(mpc.sum(xs)))
    await mpc.shutdown()
mpc.run(main())
"""

AGGS = [
    Aggregate("count"),
    Aggregate("avg", "age", 0, 120),
    Aggregate("stddev", "viral_load", 0, 10_000_000, scale=10),
]


def secure_sum_seconds(folder: Path) -> float:
    script = folder / "sum.py"
    script.write_text(MPC_PROGRAM)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, str(script), "-M3", "--no-log"],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=folder,
    )
    return time.perf_counter() - start


def dp_layer_seconds(ledger: Ledger) -> float:
    start = time.perf_counter()
    policy = ledger.policy("cohort")
    assert policy is not None
    plan = plan_release(policy, AGGS, cells=4, custodians=3, threshold=1, epsilon=0.5)
    held = ledger.reserve("cohort", "bench", plan.charge_rho)
    noise = sum(sample_noise_share(plan) for _ in range(plan.custodians))
    ledger.commit(held)
    exact = {
        "count": [900, 800, 700, 600],
        "sum:age": [50_000] * 4,
        "sum:viral_load": [10**8] * 4,
        "sumsq:viral_load": [10**14] * 4,
    }
    noisy = {k: [exact[k][c] + int(noise[i][c]) for c in range(4)] for i, k in enumerate(plan.keys)}
    postprocess(plan, noisy)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    run = Run("dp", __doc__, {"repeat": args.repeat})
    with progress_to_stderr(args.json), tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ledger = Ledger(folder / "ledger.sqlite3")
        ledger.set_policy("cohort", Policy.dp(total_epsilon=1e6, default_epsilon=1.0))
        first = dp_layer_seconds(ledger)  # includes importing OpenDP once
        ours = [dp_layer_seconds(ledger) for _ in range(args.repeat)]
        base = [secure_sum_seconds(folder) for _ in range(args.repeat)]
    b, o = statistics.median(base), statistics.median(ours)
    if args.json:
        row = result(
            "DP layer of one COUNT/AVG/STDDEV x 4-group query against a minimal secure query",
            figure("DP layer", o, "s", {"first call s": first}),
            figure("3-party MPyC secure sum of 30,000 values", b, "s"),
        )
        notes = [
            f"medians of {args.repeat}; the first call of the DP layer, importing OpenDP, "
            f"took {first * 1e3:.0f} ms"
        ]
        emit(run.document([row], notes))
        return
    print(f"baseline: 3-party MPyC secure sum of 30,000 values, median {b:.3f} s")
    print(
        f"ours:     DP layer for one COUNT/AVG/STDDEV x 4-group query, median {o * 1e3:.1f} ms"
        f" (first call, with OpenDP import: {first * 1e3:.0f} ms)"
    )
    print(f"ratio:    DP layer / minimal secure query = {o / b:.3%}")


if __name__ == "__main__":
    main()

"""The seeded 30-day synthetic trace used by bench/monitor.py.

~200 users (clinicians, researchers, administrators) over 30 days, with each attack
scenario of issue 9 injected ``per_scenario`` times after the first week.  The generator
lives in ``tessera.monitor.simulate`` (the CLI's ``monitor simulate`` uses it too); this
module fixes the benchmark's parameters and can dump the trace as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tessera.monitor.simulate import Trace, build_trace

SEED = 20260301


def make_trace(seed: int = SEED, days: int = 30, users: int = 200, per_scenario: int = 20) -> Trace:
    """The benchmark trace for ``seed``."""
    return build_trace(
        np.random.default_rng(seed), days=days, users=users, per_scenario=per_scenario
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="JSON-lines file to write")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    trace = make_trace(args.seed)
    labels = {i: s for s, ids in trace.instances for i in ids}
    with args.out.open("w", encoding="utf-8") as fh:
        for i, event in enumerate(trace.events):
            row = asdict(event)
            row["recorded"] = event.recorded.isoformat() if event.recorded else None
            row["detail"] = dict(event.detail)
            row["label"] = labels.get(i)
            fh.write(json.dumps(row) + "\n")
    print(f"wrote {len(trace.events)} events to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

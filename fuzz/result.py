"""Fuzz how the requester reads a SQL job's result: a node's answer
(``tessera.mpc.jobs.result_shares``) and the released values turned into the answer
(``tessera.mpc.result.decode_result``: AVG/VARIANCE arithmetic, units, HAVING, ORDER
BY).  The first byte picks one of a few compiled plans; the rest is the node's JSON."""

from __future__ import annotations

import numpy as np

from fuzz.harness import NOT_JSON, instrumented, json_or_none, run, tessera_only
from fuzz.sql import TABLES

with instrumented(__name__):
    from tessera.core.prime import to_signed
    from tessera.mpc.jobs import result_shares
    from tessera.mpc.result import decode_result
    from tessera.mpc.sql import compile_sql
    from tessera.tables.encode import PRIME

QUERIES = (
    "SELECT COUNT(*) FROM t",
    "SELECT sex, COUNT(*) AS n, AVG(age), MIN(visit), MAX(bmi), STDDEV(load) FROM t "
    "GROUP BY sex HAVING COUNT(*) > 10 AND AVG(age) < 60 ORDER BY 2 DESC, MAX(bmi) LIMIT 5",
    "SELECT smoker, SUM(bmi), VARIANCE(age), VAR_POP(bmi), hospital FROM t WHERE age > 30 "
    "GROUP BY smoker, hospital ORDER BY SUM(bmi) / COUNT(*)",
    "SELECT COUNT(t.age), MIN(u.load) FROM t JOIN u ON t.pid = u.pid WHERE u.age IN (20, 30)",
)
PLANS = tuple(compile_sql(q, TABLES, min_group=5) for q in QUERIES)


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    if not data:
        return
    doc = json_or_none(data[1:])
    if doc is NOT_JSON:
        return
    shares = result_shares(doc, 0)
    values = [int(v) for v in to_signed(np.array(shares, dtype=object) % PRIME, PRIME)]
    decode_result(PLANS[data[0] % len(PLANS)], values)


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()

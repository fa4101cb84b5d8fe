"""Benchmark baseline: the straightforward MPyC top-k (sort every distance).

Same inputs, job and output as :mod:`tessera.mpc.knn`, but the k nearest records are
found the textbook way: keys ``d_i * 2^b + i`` (ties broken by row index, as in the
real program), MPyC's ``np_sort`` (a Batcher network) over all of them, the k-th key
taken from the sorted array (k public: ``job.extra["k"]``), and one secure comparison
per record against it.  Used by ``bench/recommend.py`` only::

    python -m tessera.mpc.knn_baseline --job J --inputs I --result R -P ... -I i
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tessera.mpc.knn import _Program, run_program

__all__ = ["main"]


class _SortBaseline(_Program):
    def __init__(self, mpc: Any, job: Any, timings: bool) -> None:
        super().__init__(mpc, job, timings)
        key_bits = job.distance_bits + job.index_bits + 2
        self.key_type = mpc.SecInt(key_bits, p=job.prime)

    async def select(self, parts: dict[str, Any], patient: Any) -> Any:
        mpc, job = self.mpc, self.job
        nf = len(job.features)
        d = await self.distances(parts, patient[:nf], patient[nf])
        self._phase("distances")
        d = await mpc.gather(d)
        keys = self.key_type.array(d) * (1 << job.index_bits) + np.arange(job.rows)
        ordered = mpc.np_sort(keys)
        kth = ordered[int(job.extra["k"]) - 1]
        self._phase("sort")
        sel = await mpc.gather(keys <= kth)
        self._phase("compare")
        return self.secint.array(sel)


def main() -> None:
    """Entry point of one baseline party process."""
    run_program(_SortBaseline)


if __name__ == "__main__":
    main()

"""Post-processing: AVG, VARIANCE, STDDEV from (noisy) sums and counts, with intervals."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.dp import Aggregate, Policy, plan_release, postprocess, sample_noise_share
from tessera.errors import InputError

AGGS = [
    Aggregate("count"),
    Aggregate("sum", "age", 0, 120),
    Aggregate("avg", "age", 0, 120),
    Aggregate("variance", "age", 0, 120),
    Aggregate("stddev", "vl", 0, 100_000, scale=10),
]


def statistics(groups: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, list[int]]:
    return {
        "count": [len(a) for a, _ in groups],
        "sum:age": [int(a.sum()) for a, _ in groups],
        "sumsq:age": [int((a.astype(np.int64) ** 2).sum()) for a, _ in groups],
        "sum:vl": [int(v.sum()) for _, v in groups],
        "sumsq:vl": [sum(int(x) ** 2 for x in v) for _, v in groups],
    }


def cohort(sizes: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng()
    return [(rng.integers(0, 121, n), rng.integers(0, 100_001, n)) for n in sizes]


def test_exact_release_matches_numpy() -> None:
    groups = cohort((50, 80))
    plan = plan_release(Policy.none(), AGGS, cells=2, custodians=3, threshold=1)
    release = postprocess(plan, statistics(groups))
    assert release.privacy() is None
    for (age, vl), row in zip(groups, release.rows, strict=True):
        assert row[0] == len(age)
        assert row[1] == age.sum()
        assert row[2] == pytest.approx(age.mean())
        assert row[3] == pytest.approx(age.var(ddof=1))
        assert row[4] == pytest.approx(vl.std(ddof=1) / 10)


def test_small_groups_are_suppressed() -> None:
    groups = cohort((3, 40))
    plan = plan_release(Policy.none(min_group_size=5), AGGS, cells=2, custodians=3, threshold=1)
    release = postprocess(plan, statistics(groups))
    assert release.suppressed == [True, False]
    assert release.rows[0] == [None] * len(AGGS)


def test_noisy_release_intervals_cover_the_truth() -> None:
    # Repeated releases: each row's intervals hold together in >= 95% of runs.
    groups = cohort((400, 900))
    exact = statistics(groups)
    truth = postprocess(
        plan_release(Policy.none(), AGGS, cells=2, custodians=3, threshold=1), exact
    ).rows
    policy = Policy.dp(total_epsilon=100.0, default_epsilon=2.0)
    plan = plan_release(policy, AGGS, cells=2, custodians=3, threshold=1)
    runs, covered = 60, 0
    for _ in range(runs):
        noise = sum(sample_noise_share(plan) for _ in range(plan.custodians))
        noisy = {
            k: [exact[k][c] + int(noise[i][c]) for c in range(2)] for i, k in enumerate(plan.keys)
        }
        release = postprocess(plan, noisy)
        ok = all(
            iv is not None and iv[0] - 1e-9 <= t <= iv[1] + 1e-9
            for row_t, row_iv in zip(truth, release.intervals, strict=True)
            for t, iv in zip(row_t, row_iv, strict=True)
            if t is not None
        )
        covered += ok
    assert covered >= runs - 3  # the union-bound intervals are conservative
    privacy = release.privacy({"cohort": {"rho": 1.0}})
    assert privacy is not None
    assert privacy["epsilon"] <= 2.0 and privacy["columns"][2]["column"] == "avg(age)"
    assert len(privacy["columns"][2]["intervals"]) == 2


def test_postprocess_rejects_bad_shapes() -> None:
    plan = plan_release(Policy.none(), AGGS, cells=2, custodians=3, threshold=1)
    with pytest.raises(InputError, match="missing"):
        postprocess(plan, {"count": [1, 2]})
    with pytest.raises(InputError, match="shape"):
        postprocess(plan, np.zeros((2, 2), dtype=np.int64))
    array = np.array([statistics(cohort((9, 9)))[k] for k in plan.keys], dtype=np.int64)
    assert postprocess(plan, array).rows[0][0] == 9

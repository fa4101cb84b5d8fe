"""`tessera recommend` under a DP policy, on real custodian nodes (300 patients, 10 regimens).

Exact without a policy (equal to the oracle, ``privacy`` null); under a policy every
released cell carries the custodians' summed discrete Gaussian noise, the intervals are
sane and cover the oracle's values for most treatments, the k-NN sensitivities (two
records move per person) are in the plan, and a recommendation that would overspend is
refused by the custodians (their own ledgers) before anything runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from inprocess_nodes import fixed_noise, inprocess_nodes

from tessera.cli.main import main
from tessera.mpc.knn_spec import PlainResult, recommend_plain
from tessera.tables.schema import Schema
from tessera.workflows.recommend import build_job, dp_aggregates, read_profile

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).with_name("tessera")
PASSPHRASE = "test passphrase"
ROWS, REGIMENS, T_MAX = 300, 10, 3650
CATS = ", ".join(f"R{i}" for i in range(REGIMENS))
SCHEMA = f"""columns:
- {{name: age, type: integer, min: 18, max: 90, nullable: false}}
- {{name: cd4, type: integer, min: 0, max: 40, nullable: false}}
- {{name: m184v, type: boolean, nullable: false}}
- {{name: regimen, type: categorical, categories: [{CATS}], nullable: false}}
- {{name: ttf_days, type: integer, min: 1, max: {T_MAX}, nullable: false}}
- {{name: failed, type: boolean, nullable: false}}
recommend:
  treatment: regimen
  time: ttf_days
  event: failed
  weights: {{age: 1, cd4: 4, m184v: 40}}
"""


def _cohort(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    cols = {
        "age": rng.integers(18, 91, ROWS),
        "cd4": rng.integers(0, 41, ROWS),
        "m184v": rng.integers(0, 2, ROWS),
        "regimen": rng.integers(0, REGIMENS, ROWS),
        "ttf_days": rng.integers(1, T_MAX + 1, ROWS),
        "failed": rng.integers(0, 2, ROWS),
    }
    lines = [",".join(cols)]
    for i in range(ROWS):
        cells = []
        for name, v in cols.items():
            if name in ("m184v", "failed"):
                cells.append("true" if v[i] else "false")
            elif name == "regimen":
                cells.append(f"R{v[i]}")
            else:
                cells.append(str(v[i]))
        lines.append(",".join(cells))
    (folder / "cohort.csv").write_text("\n".join(lines) + "\n")
    (folder / "cohort.schema.yaml").write_text(SCHEMA)
    (folder / "patient.json").write_text(json.dumps({"age": 45, "cd4": 12, "m184v": True}))
    return cols


def _oracle(cols: dict[str, np.ndarray], k: int) -> PlainResult:
    return recommend_plain(
        np.stack([cols["age"], cols["cd4"], cols["m184v"]], axis=1),
        [1, 4, 40],
        [45, 12, 1],
        cols["regimen"],
        cols["ttf_days"],
        cols["failed"],
        treatments=REGIMENS,
        k=k,
    )


def _inside(value: float, interval: list[float]) -> bool:
    return interval[0] - 1e-9 <= value <= interval[1] + 1e-9


def test_knn_sensitivities_in_the_release_plan() -> None:
    """k mode: 2 records move per person (count 2, time sum 2 T_max); radius mode: 1."""
    from tessera.dp import Policy, plan_release

    schema = Schema.from_yaml(SCHEMA)
    policy = Policy(mode="dp", total_rho=1.0, default_epsilon=1.0)
    for mode, factor in (("k", 2), ("radius", 1)):
        job = build_job(schema, read_profile(SCHEMA), ROWS, mode=mode)
        plan = plan_release(
            policy, dp_aggregates(schema, job), cells=REGIMENS, custodians=3, threshold=1
        )
        assert plan.keys == ("count", "sum:ttf_days", "sum:failed")
        assert [s.sensitivity for s in plan.statistics] == [factor, factor * T_MAX, factor]
        assert plan.check(epsilon=1.0)


def test_recommend_exact_then_dp_then_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tessera.workflows.environment import init_environment
    from tessera.workflows.nodes import stop_nodes

    monkeypatch.setenv("TESSERA_PASSPHRASE", PASSPHRASE)  # owner's and officer's
    monkeypatch.setenv("TESSERA_PASSPHRASE_ALICE", "alice's passphrase")
    monkeypatch.delenv("TESSERA_PERSON", raising=False)
    monkeypatch.delenv("TESSERA_HOME", raising=False)
    cols = _cohort(tmp_path)
    env = init_environment(tmp_path / "home", nodes=3, passphrase=PASSPHRASE.encode())
    home = ["--home", str(env.home)]
    schema = str(tmp_path / "cohort.schema.yaml")
    k = 150
    args = ["recommend", "--table", "cohort", "--patient", str(tmp_path / "patient.json")]
    args += ["--k", str(k), "--profile", schema, *home]
    oracle = _oracle(cols, k)
    try:
        imp = ["table", "import", str(tmp_path / "cohort.csv"), "--name", "cohort"]
        assert main([*imp, "--schema", schema, *home]) == 0
        capsys.readouterr()

        # No policy: the exact path, unchanged (the owner, the only person, signs the job).
        assert main([*args, "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["privacy"] is None and doc["k"] == k
        assert [t["count"] for t in doc["treatments"]] == list(oracle.counts)
        assert [t["failures"] for t in doc["treatments"]] == list(oracle.events or ())
        for t, s, c in zip(doc["treatments"], oracle.time_sums, oracle.counts, strict=True):
            assert t["mean_time_to_failure"] == (s / c if c else None)
        assert main([*args, "--epsilon", "1"]) == 1  # no policy: --epsilon is refused
        assert "no differential privacy policy" in capsys.readouterr().err

        for name, role in (("alice", "researcher"), ("officer", "officer")):
            assert main(["person", "add", name, "--role", role, "--as", "owner", *home]) == 0
        policy = ["budget", "policy", "cohort", "--mode", "dp", "--total-epsilon", "6"]
        policy += ["--default-epsilon", "5", "--min-group-size", "3", *home, "--json"]
        policy += ["--as", "owner"]
        capsys.readouterr()
        assert main(policy) == 1  # a smaller minimum group than the default 5: weaker
        assert "co-sign" in capsys.readouterr().err
        assert main([*policy, "--cosign", "officer"]) == 0
        assert json.loads(capsys.readouterr().out)["signed_by"] == ["owner", "officer"]

        assert main([*args, "--json", "--researcher", "alice"]) == 0
        doc = json.loads(capsys.readouterr().out)
        _check_dp(doc, oracle, k)

        # Budget: 6 admits one release at epsilon 5, not two: refused, one line, exit 1.
        done = subprocess.run(
            [str(BIN), *args, "--researcher", "alice"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 1, done.stderr
        assert done.stdout == ""
        err = done.stderr.strip()
        assert "\n" not in err and "remaining" in err and "epsilon" in err
        assert "budget exhausted" in err
        # A smaller epsilon still fits, in the human-readable form.
        assert main([*args, "--epsilon", "0.5", "--researcher", "alice"]) == 0
        out = capsys.readouterr().out
        assert "differential privacy" in out and "budget left" in out
    finally:
        stop_nodes(env)


def _check_dp(doc: dict[str, Any], oracle: PlainResult, k: int) -> None:
    privacy = doc["privacy"]
    assert doc["k"] == k and doc["mode"] == "k" and len(doc["treatments"]) == REGIMENS
    assert privacy["mechanism"] == "distributed discrete Gaussian"
    assert privacy["epsilon"] <= 5.0 + 1e-9 and privacy["delta"] == pytest.approx(1e-6)
    assert privacy["honest_custodians_needed"] == 2 and privacy["custodians"] == 3
    stats = {s["statistic"]: s for s in privacy["statistics"]}
    assert stats["count"]["sensitivity"] == 2
    assert stats["sum:ttf_days"]["sensitivity"] == 2 * T_MAX
    assert stats["sum:failed"]["sensitivity"] == 2
    assert all(s["share_sigma"] > 0 and s["half_width"] > 0 for s in stats.values())
    names = [c["column"] for c in privacy["columns"]]
    assert names == ["count", "mean_time_to_failure", "failures", "failure_share"]
    assert privacy["budget_remaining"]["cohort"]["rho"] >= 0
    misses = 0
    shown = 0
    for c, t in enumerate(doc["treatments"]):
        assert t["treatment"] == f"R{c}"
        for j, name in enumerate(names):
            assert privacy["columns"][j]["intervals"][c] == t["intervals"][name]
        if t["suppressed"]:
            assert c in privacy["suppressed_cells"]
            assert t["count"] is None and t["mean_time_to_failure"] is None
            continue
        shown += 1
        ivs = t["intervals"]
        assert t["count"] >= 3 and _inside(t["count"], ivs["count"])
        assert ivs["count"][1] - ivs["count"][0] <= 2 * stats["count"]["half_width"] + 1e-9
        lo, hi = ivs["mean_time_to_failure"]
        assert 1 <= lo <= hi <= T_MAX and _inside(t["mean_time_to_failure"], [lo, hi])
        lo, hi = ivs["failure_share"]
        assert 0 <= lo <= hi <= 1 and _inside(t["failure_share"], [lo, hi])
        assert t["failures"] >= 0 and ivs["failures"][0] >= 0
        count = oracle.counts[c]
        exact = [
            _inside(count, ivs["count"]),
            _inside(oracle.events[c], ivs["failures"]),  # type: ignore[index]
        ]
        if count:
            exact.append(_inside(oracle.time_sums[c] / count, ivs["mean_time_to_failure"]))
            exact.append(_inside(oracle.events[c] / count, ivs["failure_share"]))  # type: ignore[index]
        misses += not all(exact)
    # Each cell's intervals hold together with >= 95%: two misses in ten is already rare.
    assert shown >= 5 and misses <= 2


@pytest.fixture
def env_with_fixed_noise(tmp_path: Path) -> Any:
    """Three in-process nodes whose noise sources return fixed values (1, 20, 300)."""
    from tessera.workflows.environment import init_environment

    env = init_environment(tmp_path / "home", nodes=3, passphrase=PASSPHRASE.encode())
    with inprocess_nodes(env, {1: fixed_noise(1), 2: fixed_noise(20), 3: fixed_noise(300)}):
        yield env


def test_every_released_cell_gets_the_sum_of_all_custodians_noise(
    env_with_fixed_noise: Any, tmp_path: Path
) -> None:
    """With fixed noise sources the k-NN release is exactly oracle + 1 + 20 + 300 per cell."""
    from tessera.dp import Policy
    from tessera.workflows.people import unlock
    from tessera.workflows.policies import catalog_bounds, set_policy
    from tessera.workflows.recommend import recommend_table
    from tessera.workflows.tables import import_csv

    env = env_with_fixed_noise
    cols = _cohort(tmp_path)
    import_csv(env, tmp_path / "cohort.csv", "cohort", schema_path=tmp_path / "cohort.schema.yaml")
    bounds, inferred = catalog_bounds(env, "cohort")
    assert not inferred  # declared in the schema
    # the default minimum group (5): the noisy counts (>= 321) are never suppressed
    policy = Policy(mode="dp", total_rho=10.0, default_epsilon=1.0, bounds=bounds)
    owner = unlock(env, "owner", PASSPHRASE.encode())
    set_policy(env, "cohort", policy, steward=owner)
    patient = json.loads((tmp_path / "patient.json").read_text())
    doc = recommend_table(env, "cohort", patient, SCHEMA, k=40, signer=owner)
    oracle = _oracle(cols, 40)
    noise = 1 + 20 + 300
    assert [t["count"] for t in doc["treatments"]] == [c + noise for c in oracle.counts]
    assert [t["failures"] for t in doc["treatments"]] == [
        e + noise
        for e in oracle.events  # type: ignore[union-attr]
    ]
    for t, s, c in zip(doc["treatments"], oracle.time_sums, oracle.counts, strict=True):
        assert t["mean_time_to_failure"] == pytest.approx(min((s + noise) / (c + noise), T_MAX))


def test_local_mode_refuses_epsilon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Local mode reads the caller's own CSVs and releases exactly: --epsilon is a usage error."""
    _cohort(tmp_path)
    args = ["recommend", "--patient", str(tmp_path / "patient.json"), "--k", "10"]
    args += [
        "--csv",
        str(tmp_path / "cohort.csv"),
        "--schema",
        str(tmp_path / "cohort.schema.yaml"),
    ]
    assert main([*args, "--epsilon", "1", "--home", str(tmp_path / "home")]) == 2
    assert "local mode" in capsys.readouterr().err

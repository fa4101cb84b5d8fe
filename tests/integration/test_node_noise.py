"""The DP hook: every custodian's private noise vector enters the MPC as its own input
and only the sum is added to the released cells (before group-size suppression)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from inprocess_nodes import fixed_noise, inprocess_nodes

from tessera.config import Environment
from tessera.errors import PolicyError
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import run_job
from tessera.workflows.people import unlock
from tessera.workflows.query import plan_query
from tessera.workflows.tables import import_csv

pytestmark = pytest.mark.integration

P = 2**61 - 1
PASSPHRASE = b"test passphrase"
NOISE = {1: fixed_noise(1), 2: fixed_noise(20), 3: fixed_noise(300)}


@pytest.fixture
def env_with_noisy_nodes(tmp_path: Path) -> Iterator[Environment]:
    env = init_environment(tmp_path / "home", nodes=3, passphrase=PASSPHRASE)
    # the raw hook: noise on an exact table and groups below 5 (custodians not enforcing)
    with inprocess_nodes(env, NOISE, enforce=False):
        yield env


def test_noise_shares_are_summed_inside_the_mpc(
    env_with_noisy_nodes: Environment, tmp_path: Path
) -> None:
    env = env_with_noisy_nodes
    csv = tmp_path / "w.csv"
    csv.write_text("age,sex\n" + "".join(f"{30 + i},{'FM'[i % 2]}\n" for i in range(20)))
    import_csv(env, csv, "w")
    plan = plan_query(env, "SELECT sex, COUNT(*), SUM(age) FROM w GROUP BY sex", min_group=1)
    groups = len(plan.groups[0].labels)  # F, M, NULL
    cells = len(plan.measures) * groups
    inputs = [{"alias": "w", "table": "w", "parts": list(plan.sources[0].parts)}]
    values, _ = run_job(
        env,
        "sql",
        inputs,
        {"plan": plan.to_dict(), "prime": P},
        prime=P,
        signer=unlock(env, "owner", PASSPHRASE),
        noise={"cells": cells, "groups": groups},
    )
    flags, measures = values[:groups], values[groups : groups + cells]
    assert flags == [1, 1, 0]  # the flag comes from the exact count; NULL group is empty
    ages_f = [30 + i for i in range(0, 20, 2)]
    ages_m = [30 + i for i in range(1, 20, 2)]
    exact = {
        ("count", None): [10, 10],
        ("count", "w.age.valid"): [10, 10],
        ("sum", "w.age.val"): [sum(ages_f), sum(ages_m)],
    }
    for m, spec in enumerate(plan.measures):
        got = measures[m * groups : (m + 1) * groups]
        want = exact[(spec.kind, spec.part)]
        assert got == [want[0] + 321, want[1] + 321, 0]  # noise 1 + 20 + 300; suppressed -> 0


def test_enforcing_custodians_refuse_noise_on_an_exact_table(tmp_path: Path) -> None:
    env = init_environment(tmp_path / "home", nodes=3, passphrase=PASSPHRASE)
    csv = tmp_path / "w.csv"
    csv.write_text("age,sex\n" + "".join(f"{30 + i},{'FM'[i % 2]}\n" for i in range(20)))
    owner = unlock(env, "owner", PASSPHRASE)
    with inprocess_nodes(env, NOISE):
        import_csv(env, csv, "w")
        plan = plan_query(env, "SELECT sex, COUNT(*) FROM w GROUP BY sex")
        groups = len(plan.groups[0].labels)
        inputs = [{"alias": "w", "table": "w", "parts": list(plan.sources[0].parts)}]
        with pytest.raises(PolicyError, match="adds no noise"):
            run_job(
                env,
                "sql",
                inputs,
                {"plan": plan.to_dict(), "prime": P},
                prime=P,
                signer=owner,
                noise={"cells": len(plan.measures) * groups, "groups": groups},
            )
        low = plan_query(env, "SELECT sex, COUNT(*) FROM w GROUP BY sex", min_group=1)
        with pytest.raises(PolicyError, match="minimum group size 1 is below"):
            run_job(env, "sql", inputs, {"plan": low.to_dict(), "prime": P}, prime=P, signer=owner)

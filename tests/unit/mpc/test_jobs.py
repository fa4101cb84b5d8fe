from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.errors import InputError
from tessera.keys.documents import canonical_bytes
from tessera.mpc._speedups import limb_matmul
from tessera.mpc.jobs import program_module, validate_job

P = 2**61 - 1


def job(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": 1,
        "type": "sql",
        "job_id": "0" * 32,
        "issued_at": 1,
        "parties": [["127.0.0.1", 1000], ["127.0.0.1", 1001], ["127.0.0.1", 1002]],
        "inputs": [{"alias": "t", "table": "t", "parts": ["age.th"]}],
        "noise": None,
        "params": {},
    }
    base.update(over)
    return base


def test_valid_job_passes() -> None:
    assert validate_job(job(), parties=3)["type"] == "sql"
    assert program_module("sql") == "tessera.mpc.sql_program"


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "rm -rf"},
        {"job_id": "xyz"},
        {"parties": [["h", 1]]},
        {"parties": [["h", 0], ["h", 1], ["h", 2]]},
        {"inputs": [{"alias": "t", "table": "../x", "parts": []}]},
        {"inputs": [{"alias": "t", "table": "t", "parts": ["../../etc/passwd"]}]},
        {"noise": {"cells": -1}},
        {"params": []},
        {"version": 2},
    ],
)
def test_malformed_jobs_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        validate_job(job(**bad), parties=3)


def test_canonical_bytes_ignore_key_order() -> None:
    a = job()
    b = dict(reversed(list(a.items())))
    assert canonical_bytes(a) == canonical_bytes(b)
    assert canonical_bytes(a) != canonical_bytes(job(issued_at=2))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(1, 5), st.integers(0, 2**32))
def test_limb_matmul_is_exact(g: int, n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, P, (g, n), dtype=np.int64).astype(object)
    b = rng.integers(0, P, (n, k), dtype=np.int64).astype(object)
    a[0, 0] = P - 1
    b[0, 0] = P - 1
    assert np.array_equal(limb_matmul(a, b, P), (a @ b) % P)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, P - 1), min_size=1, max_size=30), st.sampled_from([(1, 3), (2, 5)]))
def test_fast_random_split_recombines(values: list[int], tm: tuple[int, int]) -> None:
    from mpyc import thresha
    from mpyc.finfields import GF

    from tessera.mpc._speedups import random_split

    t, m = tm
    field = GF(P)
    shares = random_split(np.array(values, dtype=object), t, m, P)
    points = [(i + 1, shares[i]) for i in range(m - t - 1, m)]
    got = thresha.np_recombine(field, points)
    assert [int(v) % P for v in np.asarray(getattr(got, "value", got))] == values


def test_a_job_of_another_protocol_version_is_refused_by_name() -> None:
    assert validate_job(job(protocol=1), parties=3)["type"] == "sql"
    with pytest.raises(InputError, match="speaks protocol 2; this node speaks 1"):
        validate_job(job(protocol=2), parties=3)


def test_parties_of_another_protocol_version_stop_before_any_input() -> None:
    import asyncio
    import subprocess
    import sys
    import textwrap

    # a party process meets peers that speak protocol 1 and 7: it exits with the reason
    code = textwrap.dedent(
        """
        import asyncio
        from tessera.mpc.party import _same_protocol

        class Peers:
            async def transfer(self, value):
                return [value, 7, value]

        asyncio.run(_same_protocol(Peers(), 0))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "protocol version mismatch: this node speaks 1, node 2 speaks 7" in done.stderr

    from tessera.mpc.party import _same_protocol

    class Same:
        async def transfer(self, value: int) -> list[int]:
            return [value, value, value]

    asyncio.run(_same_protocol(Same(), 1))  # nothing to refuse

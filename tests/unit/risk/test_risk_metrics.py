"""Hand-computed metrics on a six-row table, and naive re-implementations as oracles."""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.errors import InputError
from tessera.risk import assess, build_classes
from tessera.risk.classes import encode_column
from tessera.risk.privacy import (
    class_entropy,
    delta_disclosure,
    distinct_values,
    recursive_c,
    t_closeness_equal,
    t_closeness_ordered,
)

QI = ["age", "zip"]


def test_classes_of_hand_table(hand: pl.DataFrame) -> None:
    t = build_classes(hand, QI, "score")
    assert t.n == 6
    assert sorted(t.sizes.tolist()) == [1, 2, 3]
    assert t.sensitive is not None
    assert t.sensitive.labels == ["1", "2", "3"]
    assert t.sensitive.ordered


def test_hand_values_ordered(hand: pl.DataFrame) -> None:
    t = build_classes(hand, QI, "score")
    # classes sorted by key: (30,A), (40,B), (50,C)
    assert t_closeness_ordered(t) == pytest.approx([1 / 3, 1 / 4, 1 / 2])
    assert t_closeness_equal(t) == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    assert distinct_values(t).tolist() == [2, 2, 1]
    r = assess(hand, QI, "score", detect_identifiers=False)
    assert r.t_variant == "ordered"
    assert r.t_closeness == pytest.approx(0.5)
    assert r.k_anonymity == 1
    assert r.l_diversity == 1


def test_hand_values_categorical(hand: pl.DataFrame) -> None:
    t = build_classes(hand, QI, "dx")
    assert t_closeness_equal(t) == pytest.approx([1 / 6, 1 / 6, 5 / 6])
    assert delta_disclosure(t) == pytest.approx([math.log(4 / 3), math.log(1.5), math.log(6)])
    ent = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert class_entropy(t) == pytest.approx([ent, math.log(2), 0.0])
    c = recursive_c(t, 2)
    assert c[:2].tolist() == pytest.approx([2.0, 1.0])
    assert math.isinf(c[2])
    r = assess(hand, QI, "dx", detect_identifiers=False)
    assert r.t_variant == "equal"
    assert r.t_closeness == pytest.approx(5 / 6)
    assert r.delta == pytest.approx(math.log(6))
    assert r.entropy_l == pytest.approx(1.0)


def test_recursive_cl_uses_descending_counts() -> None:
    # One class with counts 5, 3, 2: for l = 2, c* = 5 / (3 + 2) = 1 -> (c,2) for c > 1.
    df = pl.DataFrame({"q": [1] * 10, "s": list("aaaaabbbcc")})
    r = assess(df, ["q"], "s", recursive_l=2, detect_identifiers=False)
    assert r.recursive_c == pytest.approx(1.0)
    assert r.as_dict()["recursive_cl_diversity"]["smallest_integer_c"] == 2
    r3 = assess(df, ["q"], "s", recursive_l=3, detect_identifiers=False)
    assert r3.recursive_c == pytest.approx(2.5)


def test_missing_values_are_a_value_of_their_own() -> None:
    df = pl.DataFrame({"a": [1, None, None, 2], "s": ["x", None, "y", "x"]})
    t = build_classes(df, ["a"], "s")
    assert sorted(t.sizes.tolist()) == [1, 1, 2]
    assert t.sensitive is not None and t.sensitive.labels[0] == ""


def test_encode_column_orders_and_nulls() -> None:
    codes, card = encode_column(pl.Series([3, None, 1, 3]))
    assert codes.tolist() == [2, 0, 1, 2] and card == 3
    codes, card = encode_column(pl.Series(["b", "a", "b"]))
    assert codes.tolist() == [1, 0, 1] and card == 2


@pytest.mark.parametrize(
    ("qi", "sa", "message"),
    [
        (["nope"], "dx", "unknown quasi-identifier column(s): nope"),
        (QI, "nope", "unknown sensitive column(s): nope"),
        ([], "dx", "at least one quasi-identifier"),
        (["age", "age"], "dx", "repeat"),
        (["age", "dx"], "dx", "both"),
    ],
)
def test_bad_columns(hand: pl.DataFrame, qi: list[str], sa: str, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        assess(hand, qi, sa)


def _naive(df: pl.DataFrame, qi: list[str], sa: str) -> dict[str, float]:
    rows = df.rows(named=True)
    values = sorted({r[sa] for r in rows})
    p = np.array([sum(r[sa] == v for r in rows) / len(rows) for v in values])
    groups: dict[tuple[object, ...], list[object]] = {}
    for r in rows:
        groups.setdefault(tuple(r[c] for c in qi), []).append(r[sa])
    t_ord, t_eq, delta, ent = [], [], [], []
    for members in groups.values():
        q = np.array([members.count(v) / len(members) for v in values])
        t_ord.append(np.abs(np.cumsum(q - p)).sum() / max(len(values) - 1, 1))
        t_eq.append(0.5 * np.abs(q - p).sum())
        delta.append(max(abs(math.log(qi_ / pi)) for qi_, pi in zip(q, p, strict=True) if qi_))
        ent.append(-sum(x * math.log(x) for x in q if x))
    return {
        "k": min(len(m) for m in groups.values()),
        "l": min(len(set(m)) for m in groups.values()),
        "t_ord": max(t_ord),
        "t_eq": max(t_eq),
        "delta": max(delta),
        "entropy_l": math.exp(min(ent)),
    }


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from("xyz"), st.integers(0, 7)),
        min_size=1,
        max_size=60,
    )
)
def test_matches_naive_definitions(rows: list[tuple[int, str, int]]) -> None:
    df = pl.DataFrame(rows, schema=["a", "b", "s"], orient="row")
    want = _naive(df, ["a", "b"], "s")
    got = assess(df, ["a", "b"], "s", detect_identifiers=False)
    assert got.k_anonymity == want["k"]
    assert got.l_diversity == want["l"]
    assert got.t_ordered == pytest.approx(want["t_ord"], abs=1e-12)
    assert got.t_equal == pytest.approx(want["t_eq"], abs=1e-12)
    assert got.delta == pytest.approx(want["delta"], abs=1e-12)
    assert got.entropy_l == pytest.approx(want["entropy_l"])


@settings(max_examples=20, deadline=None)
@given(st.permutations(list(range(6))))
def test_row_order_does_not_matter(order: list[int]) -> None:
    from risk_data import HAND

    a = assess(HAND, QI, "score", detect_identifiers=False).as_dict()
    b = assess(HAND[order], QI, "score", detect_identifiers=False).as_dict()
    for key in ("k_anonymity", "l_diversity", "t_closeness", "delta_disclosure", "prosecutor"):
        assert a[key] == pytest.approx(b[key])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-(10**12), 10**12)), min_size=1, max_size=40))
def test_encode_integers_keeps_order(values: list[int | None]) -> None:
    codes, card = encode_column(pl.Series(values, dtype=pl.Int64))
    distinct = sorted({v for v in values if v is not None})
    expect = [0 if v is None else distinct.index(v) + (None in values) for v in values]
    assert codes.tolist() == expect
    assert card == len(distinct) + (None in values)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=3)), min_size=1, max_size=40))
def test_encode_text_keeps_order(values: list[str | None]) -> None:
    s = pl.Series(values, dtype=pl.String)
    codes, card = encode_column(s)
    distinct = s.drop_nulls().unique().sort().to_list()
    expect = [0 if v is None else distinct.index(v) + (None in values) for v in values]
    assert codes.tolist() == expect
    assert card == len(distinct) + (None in values)

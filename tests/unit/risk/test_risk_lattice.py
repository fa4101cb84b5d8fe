"""The Flash-style lattice search against brute force on random monotone predicates."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.risk.lattice import search


@st.composite
def lattices(draw: st.DrawFn) -> tuple[list[int], list[tuple[int, ...]]]:
    heights = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    nodes = list(itertools.product(*(range(h) for h in heights)))
    gens = draw(st.lists(st.sampled_from(nodes), max_size=4))
    return heights, gens


@settings(max_examples=60, deadline=None)
@given(lattices())
def test_minimal_nodes_match_brute_force(case: tuple[list[int], list[tuple[int, ...]]]) -> None:
    heights, gens = case

    def anonymous(node: tuple[int, ...]) -> bool:  # upward closure of gens: monotone
        return any(all(a >= g for a, g in zip(node, gen, strict=True)) for gen in gens)

    calls: list[tuple[int, ...]] = []

    def evaluate(node: tuple[int, ...]) -> tuple[bool, int]:
        calls.append(node)
        return anonymous(node), sum(node)

    result = search(heights, evaluate)
    nodes = list(itertools.product(*(range(h) for h in heights)))
    anon = [n for n in nodes if anonymous(n)]
    minimal = {
        n
        for n in anon
        if not any(m != n and all(a <= b for a, b in zip(m, n, strict=True)) for m in anon)
    }
    assert {n for n, _ in result.minimal} == minimal
    assert all(payload == sum(n) for n, payload in result.minimal)
    assert len(calls) == len(set(calls)) == result.evaluated <= len(nodes)
    assert result.complete and result.size == len(nodes)


def test_search_evaluates_a_fraction_of_a_large_lattice() -> None:
    heights = [5, 5, 5, 5, 5, 5]  # 15,625 nodes

    def evaluate(node: tuple[int, ...]) -> tuple[bool, None]:
        return sum(node) >= 12, None

    result = search(heights, evaluate)
    assert result.complete
    assert result.evaluated < result.size // 2
    assert all(sum(n) == 12 for n, _ in result.minimal)


def test_budget_stops_the_search() -> None:
    result = search([4, 4, 4], lambda n: (sum(n) >= 5, None), max_evaluations=2)
    assert result.evaluated == 2 and not result.complete

"""Search of a generalisation lattice for its minimal anonymous nodes (Flash-style).

A node is a tuple of levels, one per attribute, ``0 <= level < height``.  Anonymity is
assumed monotone: every node above an anonymous node is anonymous, every node below a
non-anonymous one is not.  The search (after Kohlmayer et al.'s Flash, 2012):

* walks the nodes bottom-up by height; an untagged node starts a *path* upward (one
  level up at a time, preferring untagged successors);
* binary-searches the path for its lowest anonymous node, evaluating only untagged
  nodes;
* tags by closure: an anonymous node tags everything above it, a non-anonymous node
  everything below it, so most nodes are never evaluated.

Every minimal anonymous node is evaluated (it cannot be tagged by closure), so the
minimal ones are exactly the evaluated anonymous nodes none of whose direct
predecessors is anonymous.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

__all__ = ["LatticeResult", "search"]

T = TypeVar("T")
Node = tuple[int, ...]


@dataclass(frozen=True)
class LatticeResult(Generic[T]):
    """Minimal anonymous nodes with what the evaluator returned for them."""

    minimal: list[tuple[Node, T]]
    evaluated: int
    size: int
    complete: bool


class _Tags:
    """Status of every node (dense array): 1 anonymous, -1 not, 0 unknown.

    The upward closure of a node is the box ``[x_0:, x_1:, ...]`` and the downward one
    ``[:x_0+1, :x_1+1, ...]``, so tagging by closure is one slice assignment.
    """

    def __init__(self, heights: Sequence[int]) -> None:
        self.status_of = np.zeros(tuple(heights), dtype=np.int8)

    def add(self, node: Node, anonymous: bool) -> None:
        if anonymous:
            box = self.status_of[tuple(slice(x, None) for x in node)]
            box[box == 0] = 1
        else:
            box = self.status_of[tuple(slice(0, x + 1) for x in node)]
            box[box == 0] = -1
        self.status_of[node] = 1 if anonymous else -1

    def status(self, node: Node) -> bool | None:
        v = int(self.status_of[node])
        return None if v == 0 else v > 0


def _path(start: Node, heights: Sequence[int], tags: _Tags) -> list[Node]:
    path = [start]
    cur = list(start)
    while True:
        options = [i for i, h in enumerate(heights) if cur[i] < h - 1]
        if not options:
            return path
        pick = options[0]
        for i in options:  # prefer a successor whose status is still unknown
            succ = (*cur[:i], cur[i] + 1, *cur[i + 1 :])
            if tags.status(succ) is None:
                pick = i
                break
        cur[pick] += 1
        path.append(tuple(cur))


def search(
    heights: Sequence[int],
    evaluate: Callable[[Node], tuple[bool, T]],
    *,
    max_evaluations: int | None = None,
) -> LatticeResult[T]:
    """Find the minimal anonymous nodes; ``evaluate(node)`` -> (anonymous, payload)."""
    size = int(np.prod(heights))
    nodes = sorted(itertools.product(*(range(h) for h in heights)), key=lambda v: (sum(v), v))
    tags = _Tags(heights)
    anonymous: dict[Node, T] = {}
    evaluated = 0
    complete = True

    def probe(node: Node) -> bool:
        nonlocal evaluated
        known = tags.status(node)
        if known is not None:
            return known
        if max_evaluations is not None and evaluated >= max_evaluations:
            raise _Budget
        ok, payload = evaluate(node)
        evaluated += 1
        tags.add(node, ok)
        if ok:
            anonymous[node] = payload
        return ok

    try:
        for node in nodes:
            if tags.status(node) is not None:
                continue
            path = _path(node, heights, tags)
            lo, hi = 0, len(path)  # first anonymous index on the path lies in [lo, hi]
            while lo < hi:
                mid = (lo + hi) // 2
                if probe(path[mid]):
                    hi = mid
                else:
                    lo = mid + 1
    except _Budget:
        complete = False
    minimal = []
    for node, payload in anonymous.items():
        # minimal: no direct predecessor is anonymous (every node is tagged by now,
        # or the budget ran out and the answer is the best known so far)
        preds = ((*node[:i], node[i] - 1, *node[i + 1 :]) for i in range(len(node)) if node[i])
        if not any(tags.status(p) for p in preds):
            minimal.append((node, payload))
    return LatticeResult(minimal, evaluated, size, complete)


class _Budget(Exception):  # noqa: N818 - internal control flow, never escapes search()
    """The evaluation budget is spent."""

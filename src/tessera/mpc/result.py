"""Turn the released cells of a SQL job into the answer (run by the requester).

The MPC releases, per group, a size flag, the secure sums the plan asked for and the
MIN/MAX offsets.  Here the requester derives AVG, VARIANCE and STDDEV from sums and
counts, converts units back (decimals, dates), drops suppressed groups, then applies
HAVING, ORDER BY and LIMIT.  The requester therefore learns the aggregates of every
group that passed the group-size minimum, not only those HAVING/LIMIT keep.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
from collections.abc import Sequence
from typing import Any

import sqlglot
import sqlglot.expressions as exp

from tessera.errors import UnsupportedError

__all__ = ["decode_result"]

_EPOCH = _dt.date(1970, 1, 1)


def _units_to_value(info: dict[str, Any], units: int) -> Any:
    kind = info["kind"]
    if kind == "decimal":
        return units / 10 ** int(info["scale"])
    if kind == "date":
        return (_EPOCH + _dt.timedelta(days=int(units))).isoformat()
    if kind == "boolean":
        return bool(units)
    return int(units)


def _aggregate_value(spec: dict[str, Any], plan: dict[str, Any], cell: Any, extreme: Any) -> Any:
    func = spec["func"]
    n = cell(spec["count"])
    if func in ("count", "count_star"):
        return n
    info = plan["cols"][spec["ref"]]
    scale = 10 ** int(info.get("scale", 0)) if info["kind"] == "decimal" else 1
    if func == "sum":
        if n == 0:
            return None
        s = cell(spec["sum"])
        return s / scale if info["kind"] == "decimal" else s
    if func == "avg":
        return None if n == 0 else cell(spec["sum"]) / n / scale
    if func.startswith(("var", "stddev")):
        s, q = cell(spec["sum"]), cell(spec["sumsq"])
        denom = n - 1 if func.endswith("samp") else n
        if denom <= 0:
            return None
        var = max(0.0, (q - s * s / n) / denom) / (scale * scale)
        return math.sqrt(var) if func.startswith("stddev") else var
    if func in ("min", "max"):
        if n == 0:
            return None
        r = extreme(spec["extreme"])
        lo, hi = int(info["min"]), int(info["max"])
        del hi
        return _units_to_value(info, lo + r)
    raise ValueError(func)


class _Row:
    def __init__(self, labels: dict[str, Any], aggs: dict[str, Any], items: dict[str, Any]) -> None:
        self.labels = labels
        self.aggs = aggs
        self.items = items


def _eval(node: Any, row: _Row) -> Any:
    if isinstance(node, exp.Paren):
        return _eval(node.this, row)
    key = node.sql()
    if key in row.aggs:
        return row.aggs[key]
    if isinstance(node, exp.Column):
        name = node.name.lower()
        if name in row.labels:
            return row.labels[name]
        if name in row.items:
            return row.items[name]
        raise UnsupportedError(f"column {node.sql()} in HAVING/ORDER BY")
    if isinstance(node, exp.Literal):
        return str(node.this) if node.is_string else float(node.this)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Neg):
        v = _eval(node.this, row)
        return None if v is None else -v
    if isinstance(node, exp.Not):
        v = _eval(node.this, row)
        return None if v is None else not v
    if isinstance(node, exp.And | exp.Or):
        a, b = _eval(node.this, row), _eval(node.expression, row)
        if isinstance(node, exp.And):
            return False if (a is False or b is False) else (None if None in (a, b) else True)
        return True if (a is True or b is True) else (None if None in (a, b) else False)
    ops: dict[type[Any], Any] = {
        exp.EQ: lambda a, b: a == b,
        exp.NEQ: lambda a, b: a != b,
        exp.LT: lambda a, b: a < b,
        exp.LTE: lambda a, b: a <= b,
        exp.GT: lambda a, b: a > b,
        exp.GTE: lambda a, b: a >= b,
        exp.Add: lambda a, b: a + b,
        exp.Sub: lambda a, b: a - b,
        exp.Mul: lambda a, b: a * b,
        exp.Div: lambda a, b: a / b if b else None,
    }
    for cls, fn in ops.items():
        if isinstance(node, cls):
            a, b = _eval(node.this, row), _eval(node.expression, row)
            return None if a is None or b is None else fn(a, b)
    raise UnsupportedError(f"{type(node).__name__.upper()} ({node.sql()[:60]}) in an expression")


def decode_result(plan: dict[str, Any], values: Sequence[int]) -> dict[str, Any]:
    """The query answer ``{"columns", "rows", "privacy", "suppressed_groups"}``."""
    groups = plan["groups"]
    label_sets = [g["labels"] for g in groups]
    combos = list(itertools.product(*label_sets)) if groups else [()]
    gn = len(combos)
    k = len(plan["measures"])
    flags = values[:gn]
    cells = values[gn : gn + k * gn]
    ext = values[gn + k * gn :]
    items = plan["items"]
    parsed = [
        sqlglot.parse_one(it["expr"], read="duckdb") if "expr" in it else None for it in items
    ]
    having = sqlglot.parse_one(plan["having"], read="duckdb") if plan.get("having") else None
    rows: list[tuple[list[Any], _Row]] = []
    suppressed = 0
    for g, labels in enumerate(combos):
        if flags[g] != 1:
            suppressed += 1
            continue

        def cell(m: int, g: int = g) -> int:
            return int(cells[m * gn + g])

        def extreme(e: int, g: int = g) -> int:
            return int(ext[e * gn + g])

        aggs = {
            key: _aggregate_value(spec, plan, cell, extreme)
            for key, spec in plan["aggregates"].items()
        }
        label_map = {grp["name"].lower(): labels[i] for i, grp in enumerate(groups)}
        ctx = _Row(label_map, aggs, {})
        out = []
        for it, node in zip(items, parsed, strict=True):
            value = labels[it["group"]] if node is None else _eval(node, ctx)
            if (
                isinstance(value, float)
                and value.is_integer()
                and node is not None
                and "count" in it["expr"].lower()[:6]
            ):
                value = int(value)
            out.append(value)
            ctx.items[str(it["name"]).lower()] = value
        if having is not None and _eval(having, ctx) is not True:
            continue
        rows.append((out, ctx))
    for spec in reversed(plan["order"]):
        node = sqlglot.parse_one(spec["expr"], read="duckdb")
        pos = int(node.this) - 1 if isinstance(node, exp.Literal) and not node.is_string else -1

        def keyf(r: tuple[list[Any], _Row], pos: int = pos, node: Any = node) -> Any:
            return r[0][pos] if pos >= 0 else _eval(node, r[1])

        present = [r for r in rows if keyf(r) is not None]
        missing = [r for r in rows if keyf(r) is None]
        present.sort(key=keyf, reverse=spec["desc"])
        rows = present + missing
    if plan.get("limit") is not None:
        rows = rows[: plan["limit"]]
    return {
        "columns": [it["name"] for it in items],
        "rows": [r[0] for r in rows],
        "privacy": None,
        "suppressed_groups": suppressed,
        "min_group": plan["min_group"],
    }

"""Turn the released cells of a SQL job into the answer (run by the requester).

The MPC releases, per group, a size flag, the secure sums the plan asked for and the
MIN/MAX offsets.  Here the requester derives AVG, VARIANCE and STDDEV from sums and
counts, converts units back (decimals, dates), drops suppressed groups, then applies
HAVING, ORDER BY and LIMIT.  The requester therefore learns the aggregates of every
group that passed the group-size minimum, not only those HAVING/LIMIT keep.

:func:`finish_rows` (ORDER BY and LIMIT) and :func:`answer` (the answer's shape) serve
the exact answers here and the DP answers of :mod:`tessera.workflows.query` alike.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlglot
import sqlglot.expressions as exp

from tessera.errors import IntegrityError, UnsupportedError
from tessera.mpc.plan import AggregateSpec, ColumnInfo, Item, OrderBy, SqlPlan
from tessera.mpc.sql import aggregate_key

__all__ = [
    "NOISY_EMPTY",
    "NO_VALUES",
    "NULL_GROUP",
    "NULL_OPERAND",
    "TOO_FEW",
    "UNINFORMATIVE",
    "UNINFORMATIVE_SHARE",
    "answer",
    "declared_range",
    "decode_result",
    "finish_rows",
    "interval_decimals",
    "result_size",
    "uninformative",
]

Extra = TypeVar("Extra")

_EPOCH = _dt.date(1970, 1, 1)


def _units_to_value(info: ColumnInfo, units: int) -> Any:
    kind = info.kind
    if kind == "decimal":
        return units / 10**info.scale
    if kind == "date":
        try:
            return (_EPOCH + _dt.timedelta(days=int(units))).isoformat()
        except OverflowError:
            raise IntegrityError(f"the result holds a date out of range ({units} days)") from None
    if kind == "boolean":
        return bool(units)
    return int(units)


def _aggregate_value(spec: AggregateSpec, plan: SqlPlan, cell: Any, extreme: Any) -> Any:
    func = spec.func
    n = cell(spec.count)
    if func in ("count", "count_star") or spec.ref is None:
        return n
    info = plan.cols[spec.ref]
    scale = 10**info.scale if info.kind == "decimal" else 1
    if func == "sum":
        if n == 0:
            return None
        s = cell(spec.sum)
        return s / scale if info.kind == "decimal" else s
    if func == "avg":
        return None if n == 0 else cell(spec.sum) / n / scale
    if func.startswith(("var", "stddev")):
        s, q = cell(spec.sum), cell(spec.sumsq)
        denom = n - 1 if func.endswith("samp") else n
        if denom <= 0:
            return None
        var = max(0.0, (q - s * s / n) / denom) / (scale * scale)
        return math.sqrt(var) if func.startswith("stddev") else var
    if func in ("min", "max"):
        if n == 0:
            return None
        return _units_to_value(info, info.min + extreme(spec.extreme))
    raise ValueError(func)


NO_VALUES = "no rows with a value in this group"
TOO_FEW = "fewer than 2 rows with a value in this group"
NULL_GROUP = "the group of rows where this column is NULL"
NULL_OPERAND = "an aggregate in the expression is NULL, or it divides by zero"
NOISY_EMPTY = "no rows: the noisy count is below 1 (2 for VARIANCE/STDDEV)"
#: An interval covering at least this share of the value's declared range tells nothing.
UNINFORMATIVE_SHARE = 0.5
UNINFORMATIVE = (
    f"uninformative: its 95% interval covers at least {UNINFORMATIVE_SHARE:.0%} of the "
    "column's declared range"
)


def _null_reason(spec: AggregateSpec, cell: Any) -> str:
    """Why an aggregate came out NULL (exact release)."""
    if spec.func.startswith(("var", "stddev")) and cell(spec.count) > 0:
        return TOO_FEW
    return NO_VALUES


def declared_range(func: str, lower: float, upper: float) -> float | None:
    """Width of the values ``func`` can take over a column bounded by [lower, upper].

    None where the aggregate has no declared range (COUNT and SUM grow with the group).
    """
    width = upper - lower
    if func == "avg":
        return width
    if func.startswith("stddev"):
        return width / 2
    if func.startswith("var"):
        return (width / 2) ** 2
    return None


def uninformative(func: str, lower: float, upper: float, interval: Sequence[float] | None) -> bool:
    """Whether ``interval`` covers at least half the declared range of ``func``'s values."""
    span = declared_range(func, lower, upper)
    if interval is None or span is None or span <= 0:
        return False
    return (interval[1] - interval[0]) >= UNINFORMATIVE_SHARE * span


def interval_decimals(interval: Sequence[float]) -> int:
    """Decimals that show a DP value to the precision its interval gives (two digits of
    the half-width; human output only, JSON keeps every digit)."""
    half = (interval[1] - interval[0]) / 2
    if not math.isfinite(half) or half <= 0:
        return 6
    return max(0, min(6, 1 - math.floor(math.log10(half))))


class _Row:
    def __init__(self, labels: dict[str, Any], aggs: dict[str, Any], items: dict[str, Any]) -> None:
        self.labels = labels
        self.aggs = aggs
        self.items = items
        self.notes: list[str | None] = []


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
        raise UnsupportedError(f"unsupported: column {node.sql()} in HAVING/ORDER BY")
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
    raise UnsupportedError(
        f"unsupported: {type(node).__name__.upper()} ({node.sql()[:60]}) in an expression"
    )


def finish_rows(
    plan: SqlPlan,
    rows: list[tuple[list[Any], Extra]],
    evaluate: Callable[[OrderBy, Extra], Any] | None = None,
) -> list[tuple[list[Any], Extra]]:
    """``rows`` (output values, anything else) sorted by ORDER BY and cut by LIMIT.

    A term that names an output column (``OrderBy.column``) sorts by its value; any
    other term by ``evaluate(term, extra)`` (exact answers: an expression over the
    group's aggregates).  NULLs sort last in both directions, as in DuckDB; sorts are
    stable, so earlier terms take precedence.
    """
    for spec in reversed(plan.order):
        key = _sort_key(spec, evaluate)
        present = [r for r in rows if key(r) is not None]
        missing = [r for r in rows if key(r) is None]
        present.sort(key=key, reverse=spec.desc)
        rows = present + missing
    return rows if plan.limit is None else rows[: plan.limit]


def _sort_key(
    spec: OrderBy, evaluate: Callable[[OrderBy, Extra], Any] | None
) -> Callable[[tuple[list[Any], Extra]], Any]:
    column = spec.column
    if column is not None:
        return lambda row: row[0][column]
    if evaluate is None:
        raise UnsupportedError(f"unsupported: ORDER BY {spec.expr}: not an output column")
    return lambda row: evaluate(spec, row[1])


def answer(
    plan: SqlPlan,
    rows: list[list[Any]],
    *,
    privacy: dict[str, Any] | None,
    suppressed: int,
    min_group: int,
    notes: list[list[str | None]] | None = None,
) -> dict[str, Any]:
    """The answer document ``{"columns", "rows", "notes", "privacy", "suppressed_groups",
    "min_group"}``; ``notes[r][c]`` says why ``rows[r][c]`` is NULL or carries no
    information (None when it needs no note)."""
    return {
        "columns": plan.columns,
        "rows": rows,
        "notes": notes if notes is not None else [[None] * len(row) for row in rows],
        "privacy": privacy,
        "suppressed_groups": suppressed,
        "min_group": min_group,
    }


def result_size(plan: SqlPlan) -> int:
    """How many values a ``sql`` job releases: per group a flag, the measures, the extremes."""
    return plan.cells * (1 + len(plan.measures) + len(plan.extremes))


def decode_result(plan: SqlPlan, values: Sequence[int]) -> dict[str, Any]:
    """The exact answer ``{"columns", "rows", "privacy": None, "suppressed_groups", ...}``."""
    if len(values) != result_size(plan):
        raise IntegrityError(
            f"the result has {len(values)} values, the plan releases {result_size(plan)}"
        )
    combos = plan.combos()
    gn = len(combos)
    k = len(plan.measures)
    flags = values[:gn]
    cells = values[gn : gn + k * gn]
    ext = values[gn + k * gn :]
    parsed = [
        None if it.expr is None else sqlglot.parse_one(it.expr, read="duckdb") for it in plan.items
    ]
    having = sqlglot.parse_one(plan.having, read="duckdb") if plan.having else None
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
            for key, spec in plan.aggregates.items()
        }
        label_map = {grp.name.lower(): labels[i] for i, grp in enumerate(plan.groups)}
        ctx = _Row(label_map, aggs, {})
        out = []
        for it, node in zip(plan.items, parsed, strict=True):
            value = labels[it.group] if it.group is not None else _eval(node, ctx)
            ctx.notes.append(None if value is not None else _item_note(plan, it, aggs, cell))
            if (
                isinstance(value, float)
                and value.is_integer()
                and it.expr is not None
                and "count" in it.expr.lower()[:6]
            ):
                value = int(value)
            out.append(value)
            ctx.items[it.name.lower()] = value
        if having is not None and _eval(having, ctx) is not True:
            continue
        rows.append((out, ctx))
    nodes = {o.expr: sqlglot.parse_one(o.expr, read="duckdb") for o in plan.order}
    rows = finish_rows(plan, rows, lambda spec, row: _eval(nodes[spec.expr], row))
    return answer(
        plan,
        [r[0] for r in rows],
        privacy=None,
        suppressed=suppressed,
        min_group=plan.min_group,
        notes=[r[1].notes for r in rows],
    )


def _item_note(plan: SqlPlan, item: Item, aggs: dict[str, Any], cell: Any) -> str:
    """Why output column ``item`` of a released group is NULL."""
    if item.expr is None:
        return NULL_GROUP
    key = aggregate_key(item.expr)
    spec = plan.aggregates.get(key)
    if spec is not None and aggs.get(key) is None:
        return _null_reason(spec, cell)
    return NULL_OPERAND

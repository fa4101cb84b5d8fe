"""Compile a SQL subset (parsed with sqlglot) into a secure plan for the SQL program.

Supported::

    SELECT item, ... FROM t [AS a] [[INNER] JOIN u [AS b] ON a.key = b.key]
      [WHERE cond] [GROUP BY col, ...] [HAVING cond] [ORDER BY expr [ASC|DESC], ...]
      [LIMIT n]

items: group columns; COUNT(*), COUNT(col), SUM, AVG, VARIANCE/VAR_SAMP, VAR_POP,
STDDEV/STDDEV_SAMP, STDDEV_POP, MIN, MAX of a column.  cond: =, <>, <, <=, >, >=,
BETWEEN, IN, IS [NOT] NULL, AND, OR, NOT comparing a column with constants.  GROUP BY:
categorical, boolean and ``hospital`` (each row's public origin).  JOIN: equality of
pseudonym key columns.  Anything else raises UnsupportedError naming the construct.

The plan (:class:`tessera.mpc.plan.SqlPlan`) names the shared *parts* each input needs
(see :mod:`tessera.tables.encode`) and lists the secure sums (``measures``) and extremes
the MPC releases per group; HAVING, ORDER BY, LIMIT and the AVG/VARIANCE arithmetic are
applied by the requester to the released, group-size-suppressed aggregates
(:mod:`tessera.mpc.result`).  ORDER BY terms that name an output column (by position,
name or the same aggregate) are resolved here, once, for the exact and the DP answers.
The thermometer parts of summed integer/decimal columns are named too (``checks``, on
by default) so that custodians can run dominance checks (:mod:`tessera.mpc.disclosure`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from typing import Any

import sqlglot
import sqlglot.expressions as exp

from tessera.errors import InputError, UnsupportedError
from tessera.mpc.plan import (
    MAX_INT,
    ORIGIN,
    AggregateSpec,
    ColumnInfo,
    Condition,
    Extreme,
    Group,
    Item,
    Join,
    Measure,
    OrderBy,
    Source,
    SqlPlan,
    group_labels,
)

__all__ = ["ORIGIN", "aggregate_key", "column_info", "compile_sql", "origin_info"]

_EPOCH = _dt.date(1970, 1, 1)
_AGG: dict[type[Any], str] = {
    exp.Count: "count",
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Variance: "var_samp",
    exp.VariancePop: "var_pop",
    exp.Stddev: "stddev_samp",
    exp.StddevSamp: "stddev_samp",
    exp.StddevPop: "stddev_pop",
    exp.Min: "min",
    exp.Max: "max",
}
_CMP = {exp.EQ: "=", exp.NEQ: "<>", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}
_FLIP = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _name(node: Any) -> str:
    kind = type(node).__name__.upper()
    text = node.sql()
    return f"{kind} ({text[:60]})" if text else kind


class _Compiler:
    def __init__(
        self, tables: Mapping[str, Mapping[str, Any]], min_group: int, checks: bool = True
    ) -> None:
        self.tables = tables
        self.min_group = min_group
        self.checks = checks
        self.sources: list[dict[str, Any]] = []  # alias, table, manifest
        self.parts: dict[str, set[str]] = {}
        self.measures: list[Measure] = []
        self.extremes: list[Extreme] = []
        self.aggregates: dict[str, AggregateSpec] = {}
        self.cols: dict[str, ColumnInfo] = {}
        self.encodings: dict[str, Collection[str]] = {}  # ref -> the parts stored

    # ----- names -------------------------------------------------------------------
    def _source(self, alias: str) -> dict[str, Any]:
        for s in self.sources:
            if s["alias"].lower() == alias.lower() or s["table"].lower() == alias.lower():
                return s
        raise InputError(f"unknown table or alias {alias!r}")

    def resolve(self, col: exp.Column) -> str:
        """'alias.column' for a column reference (checked against the schemas)."""
        name = col.name
        if col.table:
            srcs = [self._source(col.table)]
        else:
            srcs = [
                s for s in self.sources if name.lower() == ORIGIN or name.lower() in s["columns"]
            ]
            if len(srcs) > 1 and name.lower() != ORIGIN:
                raise InputError(f"column {name!r} is ambiguous; qualify it")
            if not srcs:
                raise InputError(f"no column {name!r}")
        src = srcs[0]
        if name.lower() == ORIGIN:
            ref = f"{src['alias']}.{ORIGIN}"
            self.cols[ref] = origin_info(src["hospitals"])
            self.encodings[ref] = ()
            return ref
        info = src["columns"].get(name.lower())
        if info is None:
            raise InputError(f"table {src['table']} has no column {name!r}")
        ref = f"{src['alias']}.{info['name']}"
        self.cols[ref] = column_info(info)
        self.encodings[ref] = tuple(info.get("parts") or ())
        return ref

    def need(self, ref: str, part: str) -> str:
        alias, col = ref.split(".", 1)
        if part not in self.encodings[ref]:
            kind = self.cols[ref].kind
            raise UnsupportedError(f"unsupported: column {col} ({kind}) has no {part!r} encoding")
        self.parts.setdefault(alias, set()).add(f"{col}.{part}")
        return f"{ref}.{part}"

    def need_range(self, ref: str) -> None:
        self.need(ref, "valid")
        for p in self.encodings[ref]:
            if p.startswith("th"):
                self.need(ref, p)

    # ----- constants -----------------------------------------------------------------
    def units(self, ref: str, lit: exp.Expression) -> Decimal:
        info = self.cols[ref]
        if isinstance(lit, exp.Neg):
            return -self.units(ref, lit.this)
        if isinstance(lit, exp.Cast):
            lit = lit.this
        if not isinstance(lit, exp.Literal):
            raise UnsupportedError(
                f"unsupported: comparison with {_name(lit)}: only constants are supported"
            )
        text = lit.this
        try:
            if info.kind == "date":
                return Decimal((_dt.date.fromisoformat(str(text)) - _EPOCH).days)
            if lit.is_string:
                raise InputError(f"column {info.name} is numeric; {text!r} is text")
            return Decimal(str(text)).scaleb(info.scale)
        except (ValueError, ArithmeticError):  # decimal's Overflow and InvalidOperation
            raise InputError(f"{str(text)[:40]!r} is not a valid {info.kind} constant") from None

    # ----- WHERE ---------------------------------------------------------------------
    def cond(self, node: exp.Expression) -> Condition:
        if isinstance(node, exp.Paren):
            return self.cond(node.this)
        if isinstance(node, exp.And | exp.Or):
            op = "and" if isinstance(node, exp.And) else "or"
            return Condition(op, (self.cond(node.this), self.cond(node.expression)))
        if isinstance(node, exp.Not):
            return Condition("not", (self.cond(node.this),))
        if isinstance(node, exp.Boolean):
            return Condition("const", value=int(bool(node.this)))
        if isinstance(node, exp.Column):
            ref = self.resolve(node)
            if self.cols[ref].kind != "boolean":
                raise UnsupportedError(
                    f"unsupported: bare column {node.sql()} in WHERE (not a boolean)"
                )
            return self._bool(ref, 1)
        if isinstance(node, exp.Is):
            if not isinstance(node.this, exp.Column):
                raise UnsupportedError(f"unsupported: IS on {_name(node.this)}")
            ref = self.resolve(node.this)
            if isinstance(node.expression, exp.Null):
                return self._isnull(ref)
            if isinstance(node.expression, exp.Boolean) and self.cols[ref].kind == "boolean":
                return self._bool(ref, int(bool(node.expression.this)))
            raise UnsupportedError(f"unsupported: IS {node.expression.sql()}")
        if isinstance(node, exp.Between):
            ref = self._column_of(node.this)
            lo = self._bound(ref, ">=", node.args["low"])
            hi = self._bound(ref, "<=", node.args["high"])
            return self._range(ref, lo, hi)
        if isinstance(node, exp.In):
            if node.args.get("query") is not None:
                raise UnsupportedError("unsupported: IN (subquery)")
            ref = self._column_of(node.this)
            return self._in(ref, node.expressions)
        for cls, op in _CMP.items():
            if isinstance(node, cls):
                left, right = node.this, node.expression
                if isinstance(right, exp.Column) and not isinstance(left, exp.Column):
                    left, right, op = right, left, _FLIP[op]
                if isinstance(right, exp.Column):
                    raise UnsupportedError(f"unsupported: comparison of two columns ({node.sql()})")
                ref = self._column_of(left)
                return self._compare(ref, op, right)
        raise UnsupportedError(f"unsupported: {_name(node)} in WHERE")

    def _column_of(self, node: exp.Expression) -> str:
        if not isinstance(node, exp.Column):
            raise UnsupportedError(
                f"unsupported: {_name(node)}: only columns compared with constants"
            )
        return self.resolve(node)

    def _isnull(self, ref: str) -> Condition:
        if self.cols[ref].kind == "origin":
            return Condition("const", value=0)
        self.need(ref, "valid")
        return Condition("isnull", ref=ref)

    def _bool(self, ref: str, value: int) -> Condition:
        self.need(ref, "valid")
        self.need(ref, "val")
        return Condition("bool", ref=ref, value=value)

    def _category(self, ref: str, lit: exp.Expression) -> int | None:
        info = self.cols[ref]
        labels = info.categories  # an origin column's: the hospitals
        if not isinstance(lit, exp.Literal) or not lit.is_string:
            raise InputError(f"compare {info.name} with a quoted category")
        text = str(lit.this)
        return labels.index(text) if text in labels else None

    def _cat_leaf(self, ref: str, idxs: list[int]) -> Condition:
        if self.cols[ref].kind == "origin":
            return Condition("origin", ref=ref, idx=tuple(sorted(set(idxs))))
        self.need(ref, "valid")
        self.need(ref, "oh")
        return Condition("cat", ref=ref, idx=tuple(sorted(set(idxs))))

    def _bool_value(self, ref: str, lit: exp.Expression) -> int:
        if isinstance(lit, exp.Boolean):
            return int(bool(lit.this))
        if isinstance(lit, exp.Literal) and str(lit.this).lower() in ("0", "1", "true", "false"):
            return int(str(lit.this).lower() in ("1", "true"))
        raise InputError(f"compare boolean {self.cols[ref].name} with TRUE or FALSE")

    def _bound(self, ref: str, op: str, lit: exp.Expression) -> int:
        """Integer unit bound: v op c  <=>  v >= bound (op '>=' / '>') or v <= bound."""
        c = self.units(ref, lit)
        if op == ">=":
            return int(c.to_integral_value(rounding="ROUND_CEILING"))
        if op == ">":
            return int(c.to_integral_value(rounding="ROUND_FLOOR")) + 1
        if op == "<=":
            return int(c.to_integral_value(rounding="ROUND_FLOOR"))
        return int(c.to_integral_value(rounding="ROUND_CEILING")) - 1  # "<"

    def _range(self, ref: str, lo: int | None, hi: int | None) -> Condition:
        info = self.cols[ref]
        if info.kind not in ("integer", "decimal", "date"):
            raise UnsupportedError(
                f"unsupported: range comparison on {info.kind} column {info.name}"
            )
        self.need_range(ref)
        return Condition("range", ref=ref, lo=lo, hi=hi)

    def _compare(self, ref: str, op: str, lit: exp.Expression) -> Condition:
        kind = self.cols[ref].kind
        if kind in ("categorical", "origin"):
            if op not in ("=", "<>"):
                raise UnsupportedError(
                    f"unsupported: {op} on categorical column {ref.split('.')[1]}"
                )
            idx = self._category(ref, lit)
            leaf = self._cat_leaf(ref, [] if idx is None else [idx])
            return leaf if op == "=" else Condition("not", (leaf,))
        if kind == "boolean":
            if op not in ("=", "<>"):
                raise UnsupportedError(f"unsupported: {op} on boolean column {ref.split('.')[1]}")
            v = self._bool_value(ref, lit)
            return self._bool(ref, v if op == "=" else 1 - v)
        if kind == "pseudonym":
            raise UnsupportedError("unsupported: conditions on pseudonym key columns")
        if op == "=":
            c = self.units(ref, lit)
            if c != c.to_integral_value():
                return self._range(ref, 1, 0)  # never equal
            return self._range(ref, int(c), int(c))
        if op == "<>":
            return Condition("not", (self._compare(ref, "=", lit),))
        if op in (">=", ">"):
            return self._range(ref, self._bound(ref, op, lit), None)
        return self._range(ref, None, self._bound(ref, op, lit))

    def _in(self, ref: str, items: list[exp.Expression]) -> Condition:
        kind = self.cols[ref].kind
        if kind in ("categorical", "origin"):
            idxs = [i for i in (self._category(ref, x) for x in items) if i is not None]
            return self._cat_leaf(ref, idxs)
        if kind == "boolean":
            vals = {self._bool_value(ref, x) for x in items}
            leaf = self._bool(ref, min(vals))
            return Condition("not", (Condition("isnull", ref=ref),)) if len(vals) == 2 else leaf
        values = sorted({self.units(ref, x) for x in items})
        ints = tuple(int(v) for v in values if v == v.to_integral_value())
        self.need_range(ref)
        return Condition("in", ref=ref, values=ints)

    # ----- aggregates ----------------------------------------------------------------
    def measure(self, kind: str, part: str | None) -> int:
        spec = Measure(kind, part)
        if spec not in self.measures:
            self.measures.append(spec)
        return self.measures.index(spec)

    def extreme(self, ref: str, op: str) -> int:
        self.need_range(ref)
        self.need(ref, "val")
        spec = Extreme(ref, op)
        if spec not in self.extremes:
            self.extremes.append(spec)
        return self.extremes.index(spec)

    def aggregate(self, node: Any) -> None:
        func = _AGG[type(node)]
        arg = node.this
        if isinstance(node, exp.Count) and (arg is None or isinstance(arg, exp.Star)):
            self.aggregates["COUNT(*)"] = AggregateSpec("count_star", self.measure("count", None))
            return
        if isinstance(arg, exp.Distinct) or node.args.get("distinct"):
            raise UnsupportedError("unsupported: DISTINCT inside an aggregate")
        if not isinstance(arg, exp.Column):
            raise UnsupportedError(f"unsupported: aggregate of {_name(arg)}: only plain columns")
        ref = self.resolve(arg)
        info = self.cols[ref]
        kind = info.kind
        if kind in ("origin", "pseudonym", "categorical") and func != "count":
            raise UnsupportedError(f"unsupported: {func.upper()} of {kind} column {info.name}")
        if kind == "date" and func not in ("count", "min", "max"):
            raise UnsupportedError(f"unsupported: {func.upper()} of date column {info.name}")
        part = None if kind == "origin" else self.need(ref, "valid")
        count = self.measure("count", part)
        total = squares = extreme = None
        if func in ("sum", "avg", "var_samp", "var_pop", "stddev_samp", "stddev_pop"):
            total = self.measure("sum", self.need(ref, "val"))
            if self.checks and kind in ("integer", "decimal"):
                self.need_range(ref)  # output checks: the largest contributions (dominance)
        if func.startswith(("var", "stddev")):
            squares = self.measure("sum", self.need(ref, "sq" if kind != "boolean" else "val"))
        if func in ("min", "max"):
            extreme = self.extreme(ref, func)
        spec = AggregateSpec(func, count, ref, sum=total, sumsq=squares, extreme=extreme)
        self.aggregates[node.sql()] = spec

    def collect(self, node: exp.Expression) -> None:
        """Register every aggregate inside ``node`` (SELECT/HAVING/ORDER expressions)."""
        for other in node.find_all(exp.AggFunc):
            if type(other) not in _AGG:
                raise UnsupportedError(f"unsupported: aggregate {_name(other)}")
        for sub in node.find_all(*_AGG.keys()):
            self.aggregate(sub)

    # ----- statement -----------------------------------------------------------------
    def compile(self, sql: str) -> SqlPlan:
        tree = self._parse(sql)
        from_ = tree.args.get("from_") or tree.args.get("from")
        if from_ is None or not isinstance(from_.this, exp.Table):
            raise UnsupportedError("unsupported: a query needs FROM table")
        self._add_source(from_.this)
        joins = tree.args.get("joins") or []
        if len(joins) > 1:
            raise UnsupportedError("unsupported: more than one JOIN")
        join = self._join(joins[0]) if joins else None
        where = tree.args.get("where")
        cond = self.cond(where.this) if where is not None else None
        group = tree.args.get("group")
        groups = [self._group(g) for g in (group.expressions if group is not None else [])]
        self.measure("count", None)  # measure 0 is COUNT(*): group-size suppression
        items = [self._item(item, groups) for item in tree.expressions]
        having = tree.args.get("having")
        if having is not None:
            self.collect(having.this)
        order = []
        if tree.args.get("order") is not None:
            for o in tree.args["order"].expressions:
                self.collect(o.this)
                expr = o.this.sql(dialect="duckdb")
                column = _output_column(o.this, expr, items)
                order.append(OrderBy(expr, bool(o.args.get("desc")), column))
        limit = None
        if tree.args.get("limit") is not None:
            lim = tree.args["limit"].expression
            if not isinstance(lim, exp.Literal) or lim.is_string:
                raise UnsupportedError("unsupported: LIMIT must be a number")
            limit = min(int(lim.this), MAX_INT)
        return SqlPlan(
            sources=tuple(
                Source(s["alias"], s["table"], tuple(sorted(self.parts.get(s["alias"], ()))))
                for s in self.sources
            ),
            join=join,
            where=cond,
            cols=self.cols,
            groups=tuple(groups),
            measures=tuple(self.measures),
            extremes=tuple(self.extremes),
            aggregates=self.aggregates,
            items=tuple(items),
            having=having.this.sql(dialect="duckdb") if having is not None else None,
            order=tuple(order),
            limit=limit,
            min_group=self.min_group,
        )

    @staticmethod
    def _parse(sql: str) -> exp.Select:
        try:
            tree = sqlglot.parse_one(sql, read="duckdb")
        except sqlglot.errors.SqlglotError as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else "syntax error"
            raise InputError(f"SQL does not parse: {first}") from None
        except RecursionError:
            raise InputError("SQL does not parse: nested too deeply") from None
        if not isinstance(tree, exp.Select):
            raise UnsupportedError(f"unsupported: {_name(tree)} statements (only SELECT)")
        for key in ("with", "distinct", "qualify", "windows", "offset", "laterals", "pivots"):
            if tree.args.get(key) or tree.args.get(f"{key}_"):  # sqlglot >= 26 adds "_"
                raise UnsupportedError(f"unsupported: {key.upper()} clause")
        if tree.find(exp.Subquery, exp.Window, exp.Union):
            raise UnsupportedError("unsupported: subqueries, window functions and set operations")
        return tree

    def _group(self, g: exp.Expression) -> Group:
        if not isinstance(g, exp.Column):
            raise UnsupportedError(f"unsupported: GROUP BY {_name(g)} (only columns)")
        ref = self.resolve(g)
        info = self.cols[ref]
        if info.kind == "categorical":
            self.need(ref, "oh")
            self.need(ref, "valid")
        elif info.kind == "boolean":
            self.need(ref, "val")
            self.need(ref, "valid")
        return Group(ref, info.kind, group_labels(info), g.name)

    def _item(self, item: exp.Expression, groups: list[Group]) -> Item:
        alias = item.alias_or_name if isinstance(item, exp.Alias) else None
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Star):
            raise UnsupportedError("unsupported: SELECT * (only aggregates and group columns)")
        if isinstance(node, exp.Column):
            ref = self.resolve(node)
            group_refs = [g.ref for g in groups]
            if ref not in group_refs:
                raise UnsupportedError(
                    f"unsupported: column {node.sql()} outside GROUP BY and aggregates"
                )
            return Item(alias or node.name, group=group_refs.index(ref))
        if not node.find(*_AGG.keys()):
            raise UnsupportedError(f"unsupported: {_name(node)} in SELECT (needs an aggregate)")
        self.collect(node)
        return Item(alias or node.sql(), expr=node.sql(dialect="duckdb"))

    def _add_source(self, table: exp.Table) -> None:
        name = table.name
        manifest = next((m for k, m in self.tables.items() if k.lower() == name.lower()), None)
        if manifest is None:
            raise InputError(f"no table {name!r}")
        alias = table.alias_or_name
        if any(s["alias"].lower() == alias.lower() for s in self.sources):
            raise UnsupportedError("unsupported: a self-join (alias the tables differently)")
        self.sources.append(
            {
                "alias": alias,
                "table": manifest["name"],
                "columns": {c["name"].lower(): c for c in manifest["columns"]},
                "hospitals": list(manifest["hospitals"]),
            }
        )

    def _join(self, join: exp.Join) -> Join:
        kind = (join.args.get("kind") or "").upper()
        side = (join.args.get("side") or "").upper()
        if side or kind not in ("", "INNER"):
            raise UnsupportedError(
                f"unsupported: {(side + ' ' + kind).strip()} JOIN (only inner equi-joins)"
            )
        if not isinstance(join.this, exp.Table):
            raise UnsupportedError("unsupported: JOIN on a subquery")
        self._add_source(join.this)
        on = join.args.get("on")
        if not isinstance(on, exp.EQ) or not (
            isinstance(on.this, exp.Column) and isinstance(on.expression, exp.Column)
        ):
            raise UnsupportedError("unsupported: JOIN needs ON a.key = b.key")
        left, right = self.resolve(on.this), self.resolve(on.expression)
        if left.split(".")[0] == right.split(".")[0]:
            raise UnsupportedError("unsupported: JOIN condition within one table")
        for ref in (left, right):
            if self.cols[ref].kind != "pseudonym":
                raise UnsupportedError(
                    f"unsupported: JOIN on {ref.split('.')[1]}: only pseudonymous key columns "
                    "can be joined"
                )
        if left.split(".")[0] != self.sources[0]["alias"]:
            left, right = right, left
        return Join(left, right)


def aggregate_key(expr: str) -> str:
    """The compiler's key (in ``SqlPlan.aggregates``) of an expression that is one aggregate."""
    node = sqlglot.parse_one(expr, read="duckdb")
    if isinstance(node, exp.Count) and (node.this is None or isinstance(node.this, exp.Star)):
        return "COUNT(*)"
    return str(node.sql())


def _output_column(node: exp.Expression, expr: str, items: list[Item]) -> int | None:
    """The output column an ORDER BY term names: by position, name or the same aggregate."""
    if isinstance(node, exp.Literal) and not node.is_string and str(node.this).isdigit():
        pos = int(node.this)
        if not 1 <= pos <= len(items):
            raise InputError(f"ORDER BY {pos}: the answer has {len(items)} columns")
        return pos - 1
    key = aggregate_key(expr)
    for j, it in enumerate(items):
        if it.name.lower() == expr.lower():
            return j
        if it.expr is not None and aggregate_key(it.expr) == key:
            return j
    return None


def column_info(info: Mapping[str, Any]) -> ColumnInfo:
    """What a plan says of a column, from its entry in a table manifest's ``columns``."""
    return ColumnInfo(
        name=str(info["name"]),
        kind=str(info["kind"]),
        min=int(info.get("min") or 0),
        max=int(info.get("max") or 0),
        scale=int(info.get("scale") or 0),
        categories=tuple(info.get("categories") or ()),
        nullable=bool(info.get("nullable", True)),
        digits=int(info.get("digits") or 0),
    )


def origin_info(hospitals: Sequence[str]) -> ColumnInfo:
    """What a plan says of the origin column (``hospital``) of a table from ``hospitals``."""
    return ColumnInfo(ORIGIN, "origin", categories=tuple(hospitals), nullable=False)


def compile_sql(
    sql: str, tables: Mapping[str, Mapping[str, Any]], *, min_group: int = 5, checks: bool = True
) -> SqlPlan:
    """The secure plan for ``sql`` over ``tables`` (name -> catalogue manifest).

    ``checks`` (default): the inputs also name the thermometer parts of every integer
    or decimal column summed (SUM, AVG, VARIANCE, STDDEV), which a custodian's output
    checks read for dominance (:mod:`tessera.mpc.disclosure`); the requester does not
    know whether a table's policy asks for them.  The measures are the same either way.
    """
    if min_group < 1:
        raise ValueError("min_group must be >= 1")
    try:
        return _Compiler(tables, min_group, checks).compile(sql)
    except RecursionError:
        raise InputError("the query is nested too deeply") from None

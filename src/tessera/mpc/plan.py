"""The secure plan of a SQL query: typed, versioned, checked whenever it is made or read.

:func:`tessera.mpc.sql.compile_sql` makes a :class:`SqlPlan`; a ``sql`` job carries its
JSON form (:meth:`SqlPlan.to_dict`, docs/sql.md "The plan") in ``params["plan"]``.
Every custodian decodes it with :meth:`SqlPlan.from_dict` before judging the job, and
every MPC party before running it: a malformed plan is refused with one line
(:class:`~tessera.errors.InputError`) before anything is computed.

Invariants of every instance (checked in ``__post_init__``, so also after
``dataclasses.replace``): names match the job names of :mod:`tessera.mpc.jobs`; lists
and texts are bounded; column references name columns of a source; every part the
program reads is listed in its source's parts; indexes (aggregate -> measure or
extreme, item -> group, ORDER BY -> item) are in range; GROUP BY labels are the
column's categories; when small groups are suppressed (``min_group > 0``) measure 0,
the count compared, is COUNT(*).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, ClassVar, Self, TypeAlias, cast

from tessera.errors import InputError, UnsupportedError
from tessera.mpc.jobs import _PART
from tessera.mpc.plan_shape import (
    MAX_INT,
    MAX_LIST,
    _check,
    _few,
    _list,
    _map,
    _named,
    _obj,
    _text,
    _within,
)

__all__ = [
    "MAX_INT",
    "MAX_LIST",
    "ORIGIN",
    "PLAN_VERSION",
    "AggregateSpec",
    "ColumnInfo",
    "Condition",
    "Extreme",
    "Group",
    "Item",
    "Join",
    "Label",
    "Measure",
    "OrderBy",
    "Source",
    "SqlPlan",
    "group_labels",
]

PLAN_VERSION = 1
ORIGIN = "hospital"  # the public column naming each row's origin
MAX_CELLS = 1 << 20  # groups of a result (the product of the GROUP BY labels)
MAX_DEPTH = 128  # nesting of WHERE
MAX_NODES = 4 * MAX_LIST  # conditions in WHERE
MAX_SOURCES = 2  # FROM and one JOIN
KINDS = ("integer", "decimal", "date", "boolean", "categorical", "pseudonym", "origin")
NUMERIC = ("integer", "decimal", "date")
GROUPABLE = ("categorical", "boolean", "origin")
_SUMMED = ("sum", "avg", "var_samp", "var_pop", "stddev_samp", "stddev_pop")
_SQUARED = ("var_samp", "var_pop", "stddev_samp", "stddev_pop")
FUNCS = ("count_star", "count", "min", "max", *_SUMMED)
_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\.[A-Za-z_][A-Za-z0-9_]{0,62}")
_COND_KEYS: dict[str, tuple[str, ...]] = {
    "and": ("args",),
    "or": ("args",),
    "not": ("arg",),
    "const": ("value",),
    "bool": ("ref", "value"),
    "isnull": ("ref",),
    "cat": ("ref", "idx"),
    "origin": ("ref", "idx"),
    "range": ("ref", "lo", "hi"),
    "in": ("ref", "values"),
}
_LEAVES: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {
    # op -> the kinds of column it reads, the parts (None: the column's range parts)
    "bool": (("boolean",), ("valid", "val")),
    "isnull": (KINDS, ("valid",)),
    "cat": (("categorical",), ("valid", "oh")),
    "origin": (("origin",), ()),
    "range": (NUMERIC, None),
    "in": (NUMERIC, None),
}
Label: TypeAlias = str | bool | None  # a GROUP BY label: category, boolean, NULL group


# ----- JSON readers (checks in tessera.mpc.plan_shape) ----------------------------------
def _read(value: Any, kind: str, what: str) -> Any:
    """``value`` checked against the field annotation ``kind`` (tuples from JSON lists)."""
    if kind.endswith(" | None"):
        return None if value is None else _read(value, kind.removesuffix(" | None"), what)
    if kind.startswith("tuple["):
        inner = kind.removeprefix("tuple[").removesuffix(", ...]")
        return tuple(_read(v, inner, what) for v in _list(value, what, MAX_LIST + 1))
    if kind.startswith("Mapping[str, "):
        inner = kind.removeprefix("Mapping[str, ").removesuffix("]")
        return {k: _read(v, inner, f"{what}[{k[:40]!r}]") for k, v in _map(value, what).items()}
    if kind in _DECODERS:
        return _DECODERS[kind](value)
    if kind == "Label":
        if value is not None and not isinstance(value, str | bool):
            raise InputError(f"plan: {what} must be a string, a boolean or null")
        return value
    expected = {"str": str, "int": int, "bool": bool}[kind]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise InputError(f"plan: {what} must be {'an' if kind == 'int' else 'a'} {kind}")
    return value


# ----- parts of a plan -----------------------------------------------------------------
class _Node:
    """A part of a plan whose JSON form is its fields (tuples as lists, parts as their
    JSON forms); reading checks each value's JSON type against the field's annotation.

    Fields named in ``_optional`` are left out of the JSON form when None.  The checks
    of values live in each class's ``__post_init__``, so they hold however it is made.
    """

    _optional: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out: dict[str, Any] = {}
        for f in fields(cast(Any, self)):
            value = getattr(self, f.name)
            if value is not None or f.name not in self._optional:
                out[f.name] = _json(value)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """The part in ``data`` (its JSON form); InputError if malformed."""
        what = cls.__name__
        names = [f.name for f in fields(cast(Any, cls))]
        required = [n for n in names if n not in cls._optional]
        d = _obj(data, f"a {what}", required, cls._optional)
        kinds = {f.name: str(f.type) for f in fields(cast(Any, cls))}
        return cls(**{n: _read(d.get(n), kinds[n], f"{what}.{n}") for n in names})


def _json(value: Any) -> Any:
    if isinstance(value, _Node | Condition):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Source(_Node):
    """An input table: its alias in the query, its name, the parts the program reads."""

    alias: str
    table: str
    parts: tuple[str, ...]

    def __post_init__(self) -> None:
        _named(self.alias, "source alias")
        _named(self.table, "table")
        _few(self.parts, f"the parts of {self.alias}")
        for part in self.parts:
            _named(part, "part", _PART)
        _check(len(set(self.parts)) == len(self.parts), f"{self.alias} lists a part twice")


@dataclass(frozen=True)
class Join(_Node):
    """An inner equi-join of the two sources on pseudonym columns (``alias.column``)."""

    left: str
    right: str

    def __post_init__(self) -> None:
        _named(self.left, "join column", _REF)
        _named(self.right, "join column", _REF)


@dataclass(frozen=True)
class ColumnInfo(_Node):
    """A column the query reads: kind, bounds in units, scale, categories (for the
    origin column ``hospital``: the hospitals), nullability, and the base-16 digits of
    its thermometer (0: one thermometer part)."""

    name: str
    kind: str
    min: int = 0
    max: int = 0
    scale: int = 0
    categories: tuple[str, ...] = ()
    nullable: bool = True
    digits: int = 0

    def __post_init__(self) -> None:
        name = self.name
        _named(name, "column")
        _check(self.kind in KINDS, f"column {name} has an unknown kind")
        _check((name.lower() == ORIGIN) == (self.kind == "origin"), f"{name}: origin column")
        _within(self.min, f"the minimum of {name}")
        _within(self.max, f"the maximum of {name}")
        _check(self.min <= self.max, f"column {name}: min is above max")
        _check(0 <= self.scale <= 6 and 0 <= self.digits <= 16, f"{name}: scale or digits")
        _few(self.categories, f"the categories of {name}")
        for c in self.categories:
            _text(c, f"a category of {name}")
        _check(len(set(self.categories)) == len(self.categories), f"{name}: duplicates")

    def range_parts(self) -> tuple[str, ...]:
        """The parts a range predicate or MIN/MAX reads: ``valid`` and the thermometer."""
        if self.digits:
            return ("valid", *(f"th{j}" for j in range(self.digits)))
        return ("valid", "th") if self.max > self.min else ("valid",)


def group_labels(info: ColumnInfo) -> tuple[Label, ...]:
    """The groups of a GROUP BY column, in the program's order (NULL last, as in SQL)."""
    null: tuple[Label, ...] = (None,) if info.nullable else ()
    if info.kind == "categorical":
        return (*info.categories, *null)
    if info.kind == "boolean":
        return (False, True, *null)
    if info.kind == "origin":
        return info.categories
    raise UnsupportedError(
        f"unsupported: GROUP BY {info.kind} column {info.name} (only categorical, boolean "
        "and hospital)"
    )


@dataclass(frozen=True)
class Condition:
    """A WHERE node.  ``op``: and/or (two ``args``), not (one), const (``value`` 0/1),
    bool (``ref`` = ``value``), isnull, cat/origin (category indexes ``idx``), range
    (``lo <= v <= hi`` in units, either None for unbounded), in (unit ``values``)."""

    op: str
    args: tuple[Condition, ...] = ()
    ref: str = ""
    value: int = 0
    idx: tuple[int, ...] = ()
    values: tuple[int, ...] = ()
    lo: int | None = None
    hi: int | None = None

    def __post_init__(self) -> None:
        keys = _COND_KEYS.get(self.op)
        if keys is None:
            raise InputError(f"plan: unknown condition {self.op[:20]!r}")
        used = {"args" if k == "arg" else k for k in keys}
        for f in fields(self)[1:]:
            _check(f.name in used or getattr(self, f.name) == f.default, f"{self.op}: {f.name}")
        arity = {"and": 2, "or": 2, "not": 1}.get(self.op, 0)
        _check(len(self.args) == arity, f"{self.op} takes {arity} conditions")
        if "ref" in used:
            _named(self.ref, "column", _REF)
        _check(self.value in (0, 1), f"the value of a {self.op} condition must be 0 or 1")
        _few(self.idx, "a category list")
        _few(self.values, "an IN list")
        _check(all(i >= 0 for i in self.idx), "a category index is negative")
        for v in (*self.values, self.lo, self.hi):
            _within(v, "a constant")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"op", ...the keys of that op}``."""
        out: dict[str, Any] = {"op": self.op}
        for key in _COND_KEYS[self.op]:
            if key == "args":
                out[key] = [a.to_dict() for a in self.args]
            elif key == "arg":
                out[key] = self.args[0].to_dict()
            elif key == "value":
                out[key] = bool(self.value) if self.op == "const" else self.value
            else:
                value = getattr(self, key)
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Any, depth: int = 0) -> Condition:
        """The condition in ``data``; InputError if malformed or nested too deeply."""
        _check(depth <= MAX_DEPTH, f"WHERE is nested more than {MAX_DEPTH} deep")
        op = data.get("op") if isinstance(data, dict) else None
        keys = _COND_KEYS.get(op) if isinstance(op, str) else None
        if op is None or keys is None:
            raise InputError("plan: a condition needs a known op")
        d = _obj(data, f"a {op} condition", ("op", *keys))
        kinds = {f.name: str(f.type) for f in fields(cls)}
        out: dict[str, Any] = {}
        for key in keys:
            if key in ("args", "arg"):
                args = _list(d["args"] if key == "args" else [d["arg"]], f"{op} arguments", 2)
                out["args"] = tuple(cls.from_dict(a, depth + 1) for a in args)
            elif op == "const":
                out[key] = int(_read(d[key], "bool", "a constant condition"))
            else:
                out[key] = _read(d[key], kinds[key], f"a {op} condition's {key}")
        return cls(op, **out)


@dataclass(frozen=True)
class Group(_Node):
    """A GROUP BY column: its reference, kind, labels (the groups) and name as written."""

    ref: str
    kind: str
    labels: tuple[Label, ...]
    name: str

    def __post_init__(self) -> None:
        _named(self.ref, "group column", _REF)
        _check(self.kind in GROUPABLE, f"GROUP BY a {self.kind[:20]} column")
        _named(self.name, "group name")
        _few(self.labels, f"the groups of {self.name}", MAX_LIST + 1)
        for label in self.labels:
            _check(label is None or isinstance(label, str | bool), "a group label's type")


@dataclass(frozen=True)
class Measure(_Node):
    """A secure sum per group: ``count`` (rows, or rows where ``part`` is 1) or ``sum``
    of ``part`` (``alias.column.part``) over the selected rows."""

    kind: str
    part: str | None = None

    def __post_init__(self) -> None:
        _check(self.kind in ("count", "sum"), f"unknown measure {self.kind[:20]!r}")
        _check(self.kind == "count" or self.part is not None, "a sum measure needs a part")
        if self.part is not None:
            alias, _, part = self.part.partition(".")
            _named(alias, "measure input")
            _named(part, "measure part", _PART)


@dataclass(frozen=True)
class Extreme(_Node):
    """MIN or MAX of a numeric column per group (released as an offset from its min)."""

    ref: str
    op: str

    def __post_init__(self) -> None:
        _named(self.ref, "extreme column", _REF)
        _check(self.op in ("min", "max"), "an extreme is min or max")


@dataclass(frozen=True)
class AggregateSpec(_Node):
    """How the requester derives one SQL aggregate: its function, column (none for
    COUNT(*)) and the indexes of the measures (count, sum, sum of squares) or extreme."""

    func: str
    count: int
    ref: str | None = None
    sum: int | None = None
    sumsq: int | None = None
    extreme: int | None = None
    _optional = ("ref", "sum", "sumsq", "extreme")

    def __post_init__(self) -> None:
        f = self.func
        _check(f in FUNCS, f"unknown aggregate {f[:20]!r}")
        _check((self.ref is None) == (f == "count_star"), f"{f} and its column")
        if self.ref is not None:
            _named(self.ref, "aggregate column", _REF)
        _check((self.sum is not None) == (f in _SUMMED), f"{f} and its sum")
        _check((self.sumsq is not None) == (f in _SQUARED), f"{f} and its squares")
        _check((self.extreme is not None) == (f in ("min", "max")), f"{f} and its extreme")
        for index in (self.count, self.sum, self.sumsq, self.extreme):
            _within(index, "an index", 0)


@dataclass(frozen=True)
class Item(_Node):
    """An output column: a GROUP BY column (``group`` index) or an expression over the
    aggregates (``expr``, DuckDB SQL)."""

    name: str
    group: int | None = None
    expr: str | None = None
    _optional = ("group", "expr")

    def __post_init__(self) -> None:
        _text(self.name, "an output column's name")
        _check((self.group is None) != (self.expr is None), "an item is a group or an expr")
        _within(self.group, "a group index", 0)
        if self.expr is not None:
            _text(self.expr, "an expression")


@dataclass(frozen=True)
class OrderBy(_Node):
    """An ORDER BY term: its SQL, direction, and the output column it names (by
    position, name or the same aggregate; None: an expression only exact answers sort)."""

    expr: str
    desc: bool = False
    column: int | None = None

    def __post_init__(self) -> None:
        _text(self.expr, "an ORDER BY term")
        _within(self.column, "an ORDER BY column", 0)


# ----- the plan --------------------------------------------------------------------------
@dataclass(frozen=True)
class SqlPlan(_Node):
    """The secure plan of one query: what the MPC computes (sources, join, where, groups,
    measures, extremes, min_group) and how the requester finishes the answer (aggregates,
    items, having, order, limit).  ``cols`` describes every column referenced."""

    sources: tuple[Source, ...]
    join: Join | None
    where: Condition | None
    cols: Mapping[str, ColumnInfo]
    groups: tuple[Group, ...]
    measures: tuple[Measure, ...]
    extremes: tuple[Extreme, ...]
    aggregates: Mapping[str, AggregateSpec]
    items: tuple[Item, ...]
    having: str | None
    order: tuple[OrderBy, ...]
    limit: int | None
    min_group: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "cols", MappingProxyType(dict(self.cols)))
        object.__setattr__(self, "aggregates", MappingProxyType(dict(self.aggregates)))
        _Verifier(self).verify()

    @property
    def cells(self) -> int:
        """How many groups (result cells per measure) the plan releases."""
        return math.prod(len(g.labels) for g in self.groups)

    def combos(self) -> list[tuple[Label, ...]]:
        """The label of every group, in the order of the released cells."""
        return list(itertools.product(*(g.labels for g in self.groups)))

    @property
    def columns(self) -> list[str]:
        """The answer's column names."""
        return [it.name for it in self.items]

    @property
    def tables(self) -> list[str]:
        """The tables the plan reads, sorted."""
        return sorted({s.table for s in self.sources})

    @property
    def booleans(self) -> frozenset[str]:
        """The references of the boolean columns."""
        return frozenset(ref for ref, info in self.cols.items() if info.kind == "boolean")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what a ``sql`` job carries in ``params["plan"]``)."""
        return {"version": PLAN_VERSION, **super().to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """The plan in ``data`` (its JSON form); InputError naming what is malformed."""
        if not isinstance(data, dict):
            raise InputError("plan: the plan must be an object")
        version = data.get("version")
        if type(version) is not int or version != PLAN_VERSION:
            raise InputError(f"plan: unsupported version {str(version)[:20]!r}")
        return super().from_dict({k: v for k, v in data.items() if k != "version"})


class _Verifier:
    """The cross-references of a plan (see the module docstring)."""

    def __init__(self, plan: SqlPlan) -> None:
        self.plan = plan
        self.parts = {s.alias: frozenset(s.parts) for s in plan.sources}

    def col(self, ref: str, what: str, kinds: Collection[str] = KINDS) -> ColumnInfo:
        info = self.plan.cols.get(ref)
        if info is None:
            raise InputError(f"plan: {what} {ref[:80]!r} is not a known column")
        _check(info.kind in kinds, f"{what} {ref[:80]!r} is a {info.kind} column")
        return info

    def needs(self, ref: str, *parts: str) -> None:
        alias, _, name = ref.partition(".")
        for part in parts:
            listed = f"{name}.{part}" in self.parts.get(alias, ())
            _check(listed, f"{ref[:80]}.{part} is not among the parts of a source")

    def verify(self) -> None:
        p = self.plan
        _check(1 <= len(p.sources) <= MAX_SOURCES, "a plan reads one table or joins two")
        _check(len({a.lower() for a in self.parts}) == len(p.sources), "an alias used twice")
        _few(list(p.cols), "cols")
        for ref, info in p.cols.items():
            alias, _, name = ref.partition(".")
            _check(alias in self.parts and name == info.name, f"{ref[:80]!r} is not a column")
        _check((p.join is not None) == (len(p.sources) == 2), "two sources need one JOIN")
        if p.join is not None:
            for ref, src in ((p.join.left, p.sources[0]), (p.join.right, p.sources[1])):
                self.col(ref, "JOIN on", ("pseudonym",))
                _check(ref.partition(".")[0] == src.alias, "the JOIN's sides")
        if p.where is not None:
            self.where(p.where)
        self.computed()
        self.finished()
        _within(p.limit, "limit", 0)
        _within(p.min_group, "min_group", 0)

    def where(self, root: Condition) -> None:
        stack = [(root, 0)]
        seen = 0
        while stack:
            node, depth = stack.pop()
            seen += 1
            _check(seen <= MAX_NODES, f"WHERE has more than {MAX_NODES} conditions")
            _check(depth <= MAX_DEPTH, f"WHERE is nested more than {MAX_DEPTH} deep")
            stack.extend((arg, depth + 1) for arg in node.args)
            if node.op in _LEAVES:
                self.leaf(node)

    def leaf(self, node: Condition) -> None:
        kinds, parts = _LEAVES[node.op]
        info = self.col(node.ref, f"a {node.op} condition on", kinds)
        self.needs(node.ref, *(info.range_parts() if parts is None else parts))
        _check(all(i < len(info.categories) for i in node.idx), "a category index")

    def computed(self) -> None:
        """Groups, measures and extremes: what the MPC reads and releases."""
        p = self.plan
        _few(p.groups, "groups")
        for g in p.groups:
            info = self.col(g.ref, "GROUP BY", (g.kind,))
            _check(g.labels == group_labels(info), f"the groups of {g.ref[:80]}")
            if g.kind != "origin":
                self.needs(g.ref, "valid", "oh" if g.kind == "categorical" else "val")
        _check(p.cells <= MAX_CELLS, f"more than {MAX_CELLS} groups")
        _check(0 < len(p.measures) <= MAX_LIST, f"1 to {MAX_LIST} measures")
        if p.min_group > 0:  # the count compared with min_group must be COUNT(*)
            _check(p.measures[0] == Measure("count"), "measure 0 must be COUNT(*)")
        for m in p.measures:
            if m.part is not None:
                alias, _, rest = m.part.partition(".")
                _check(rest in self.parts.get(alias, ()), f"measure part {m.part[:80]!r}")
        _few(p.extremes, "extremes")
        for e in p.extremes:
            info = self.col(e.ref, f"{e.op.upper()} of", NUMERIC)
            self.needs(e.ref, "val", *info.range_parts())

    def finished(self) -> None:
        """Aggregates, items and ORDER BY: how the requester finishes the answer."""
        p = self.plan
        for key, a in p.aggregates.items():
            _text(key, "an aggregate's key")
            if a.ref is not None:
                self.col(a.ref, f"{a.func.upper()} of")
            for index in (a.count, a.sum, a.sumsq):
                _check(index is None or index < len(p.measures), f"{key[:80]}: no such measure")
            if a.extreme is not None:
                _check(a.extreme < len(p.extremes), f"{key[:80]}: no such extreme")
                e = p.extremes[a.extreme]
                _check((e.ref, e.op) == (a.ref, a.func), f"{key[:80]}: another extreme")
        _few(p.items, "items")
        for it in p.items:
            _check(it.group is None or it.group < len(p.groups), f"item {it.name[:80]!r}")
        _few(p.order, "ORDER BY")
        for o in p.order:
            _check(o.column is None or o.column < len(p.items), f"ORDER BY {o.expr[:80]}")
        if p.having is not None:
            _text(p.having, "HAVING")


_DECODERS: dict[str, Callable[[Any], Any]] = {"Condition": Condition.from_dict}
_DECODERS.update((cls.__name__, cls.from_dict) for cls in _Node.__subclasses__())

"""Generalisation hierarchies: how far each quasi-identifier may be coarsened.

A hierarchy maps a column's values to labels at levels 0 (the value itself) .. h (``*``,
the attribute suppressed).  Kinds, as written in a hierarchies file (YAML/JSON mapping
of column name to spec)::

    age:        {type: bands, widths: [5, 10, 20]}          # [40, 45) -> [40, 50) -> ...
    zip:        {type: prefix, lengths: [3, 2, 1]}          # 02139 -> 021** -> 02*** ...
    admitted:   {type: date, levels: [month, year, decade]} # 2020-03-14 -> 2020-03 -> 2020
    diagnosis:  {type: category, levels: [{I10: circulatory, C50: neoplasm}, ...]}

Every hierarchy ends with ``*``.  Generalisation works on the distinct values only, so
its cost does not grow with the number of rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from tessera.errors import InputError

__all__ = ["Hierarchy", "parse_hierarchies"]

_DATE_LEVELS = ("month", "year", "decade")


@dataclass(frozen=True)
class Hierarchy:
    """One column's generalisation levels (level 0 is the raw value, the last is ``*``)."""

    column: str
    kind: str
    steps: tuple[Any, ...]

    @property
    def height(self) -> int:
        """Number of levels, including level 0 and the final ``*``."""
        return len(self.steps) + 2

    def generalise(self, values: pl.Series, level: int) -> pl.Series:
        """Labels of ``values`` at ``level`` (strings; missing stays missing below ``*``)."""
        if not 0 <= level < self.height:
            raise ValueError(f"level {level} out of range for {self.column}")
        if level == self.height - 1:
            return pl.Series(values.name, ["*"] * values.len(), dtype=pl.String)
        if level == 0:
            return values.cast(pl.String)
        step = self.steps[level - 1]
        if self.kind == "bands":
            return _band(values, float(step), self.column)
        if self.kind == "prefix":
            return _prefix(values.cast(pl.String), int(step))
        if self.kind == "date":
            return _date(values, str(step), self.column)
        return _category(values, self.steps[:level], self.column)


def _band(values: pl.Series, width: float, column: str) -> pl.Series:
    try:
        x = values.cast(pl.Float64)
    except pl.exceptions.InvalidOperationError as exc:
        raise InputError(f"column {column} is not numeric; 'bands' needs numbers") from exc
    lo = (x / width).floor() * width
    hi = lo + width

    def fmt(v: pl.Series) -> pl.Series:
        ints = (v == v.round(0)).all()
        return v.cast(pl.Int64).cast(pl.String) if ints else v.round(6).cast(pl.String)

    return ("[" + fmt(lo) + ", " + fmt(hi) + ")").alias(values.name)


def _prefix(s: pl.Series, keep: int) -> pl.Series:
    out = pl.DataFrame({"s": s}).select(
        pl.col("s").str.slice(0, keep) + pl.col("s").str.slice(keep).str.replace_all(r".", "*")
    )
    return out.to_series().alias(s.name)


def _date(values: pl.Series, unit: str, column: str) -> pl.Series:
    d = values
    if not d.dtype.is_temporal():
        d = values.cast(pl.String).str.to_date(strict=False)
        if d.null_count() > values.null_count():
            raise InputError(f"column {column} has values that are not dates (YYYY-MM-DD)")
    year = d.dt.year()
    if unit == "month":
        out = d.dt.strftime("%Y-%m")
    elif unit == "year":
        out = year.cast(pl.String)
    else:
        out = ((year // 10) * 10).cast(pl.String) + "s"
    return out.alias(values.name)


def _category(values: pl.Series, maps: Sequence[Any], column: str) -> pl.Series:
    labels = values.cast(pl.String)
    for depth, mapping in enumerate(maps, start=1):
        known = set(mapping)
        missing = [v for v in labels.unique().drop_nulls().to_list() if v not in known]
        if missing:
            raise InputError(
                f"hierarchy for {column} has no level-{depth} parent for {missing[0]!r}"
            )
        labels = labels.replace_strict(mapping, default=None, return_dtype=pl.String)
    return labels.alias(values.name)


def _numbers(spec: Mapping[str, Any], key: str, column: str) -> tuple[Any, ...]:
    raw = spec.get(key)
    if not isinstance(raw, list) or not raw:
        raise InputError(f"hierarchy for {column} needs a non-empty list '{key}'")
    try:
        nums = tuple(float(x) for x in raw)
    except (TypeError, ValueError) as exc:
        raise InputError(f"hierarchy for {column}: '{key}' must be numbers") from exc
    if any(x <= 0 for x in nums):
        raise InputError(f"hierarchy for {column}: '{key}' must be positive")
    return nums


def _one(column: str, spec: Any) -> Hierarchy:
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise InputError(f"hierarchy for {column} must be a mapping with a 'type'")
    kind = str(spec["type"])
    if kind == "bands":
        widths = _numbers(spec, "widths", column)
        if list(widths) != sorted(widths):
            raise InputError(f"hierarchy for {column}: widths must grow")
        return Hierarchy(column, kind, widths)
    if kind == "prefix":
        lengths = tuple(int(x) for x in _numbers(spec, "lengths", column))
        if list(lengths) != sorted(lengths, reverse=True):
            raise InputError(f"hierarchy for {column}: prefix lengths must shrink")
        return Hierarchy(column, kind, lengths)
    if kind == "date":
        levels = spec.get("levels", list(_DATE_LEVELS))
        if not isinstance(levels, list) or not levels or any(x not in _DATE_LEVELS for x in levels):
            raise InputError(f"hierarchy for {column}: date levels are month, year, decade")
        if [_DATE_LEVELS.index(x) for x in levels] != sorted(_DATE_LEVELS.index(x) for x in levels):
            raise InputError(f"hierarchy for {column}: date levels must coarsen")
        return Hierarchy(column, kind, tuple(levels))
    if kind == "category":
        levels = spec.get("levels")
        if (
            not isinstance(levels, list)
            or not levels
            or not all(isinstance(m, Mapping) for m in levels)
        ):
            raise InputError(f"hierarchy for {column}: 'levels' must be a list of mappings")
        maps = tuple({str(k): str(v) for k, v in m.items()} for m in levels)
        return Hierarchy(column, kind, maps)
    raise InputError(f"hierarchy for {column}: unknown type {kind!r}")


def parse_hierarchies(spec: Any) -> dict[str, Hierarchy]:
    """Hierarchies from a parsed YAML/JSON mapping ``{column: {type: ..., ...}}``."""
    if not isinstance(spec, Mapping) or not spec:
        raise InputError("the hierarchies file must be a non-empty mapping of column names")
    return {str(col): _one(str(col), s) for col, s in spec.items()}

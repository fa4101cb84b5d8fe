"""Typed table schemas: column kinds, bounds, YAML round trip and inference from a CSV.

Every value is encoded as an integer in *units*: integers as they are, fixed-point
decimals times ``10**scale``, dates as days since 1970-01-01, booleans as 0/1,
categoricals as the index of the declared category.  ``pseudonym`` columns hold a keyed
hash (the linkage key stays with the data owners) and are stored in the clear at the
custodians: they are the only columns a JOIN may use.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from tessera.errors import InputError

__all__ = [
    "KINDS",
    "NULL_TOKENS",
    "PUBLIC_ORIGIN",
    "Column",
    "Schema",
    "infer_schema",
    "parse_value",
    "reserved_origin_message",
]

KINDS = ("integer", "decimal", "boolean", "categorical", "date", "pseudonym")
NULL_TOKENS = frozenset({"", "na", "n/a", "null", "none", "nan"})
PUBLIC_ORIGIN = "hospital"  # the public column naming each row's origin
_TRUE = frozenset({"true", "t", "yes", "y"})
_FALSE = frozenset({"false", "f", "no", "n"})
_EPOCH = _dt.date(1970, 1, 1)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MAX_CATEGORIES = 64


def reserved_origin_message(name: str) -> str:
    """Why a column may not be called ``hospital``, and the fix."""
    return (
        f"column name {name!r} is reserved for each row's origin (the public hospital "
        f"label); to use this column as the origin, import with --origin-column {name}"
    )


@dataclass(frozen=True)
class Column:
    """One column: kind, bounds in units (inclusive), scale, categories, nullability."""

    name: str
    kind: str
    min: int = 0
    max: int = 0
    scale: int = 0
    categories: tuple[str, ...] = ()
    nullable: bool = True

    def __post_init__(self) -> None:
        if self.name.lower() == PUBLIC_ORIGIN:
            raise InputError(reserved_origin_message(self.name))
        if not _NAME.match(self.name):
            raise InputError(f"invalid column name {self.name!r}")
        if self.kind not in KINDS:
            raise InputError(f"column {self.name}: unknown type {self.kind!r}")
        if self.kind in ("integer", "decimal", "date") and self.min > self.max:
            raise InputError(f"column {self.name}: min is above max")
        if self.kind == "categorical" and not self.categories:
            raise InputError(f"column {self.name}: a categorical needs its categories")
        if self.kind == "categorical" and len(set(self.categories)) != len(self.categories):
            raise InputError(f"column {self.name}: duplicate categories")
        if not 0 <= self.scale <= 6:
            raise InputError(f"column {self.name}: scale must be 0..6")

    @property
    def numeric(self) -> bool:
        """Integers, decimals and dates: ordered, summable (dates: ordered only)."""
        return self.kind in ("integer", "decimal", "date")

    @property
    def width(self) -> int:
        """Number of distinct unit values minus one (max - min)."""
        return self.max - self.min

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON form (bounds in user units)."""
        out: dict[str, Any] = {"name": self.name, "type": self.kind}
        if self.kind in ("integer", "decimal", "date"):
            out["min"] = format_units(self, self.min)
            out["max"] = format_units(self, self.max)
        if self.kind == "decimal":
            out["scale"] = self.scale
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
        out["nullable"] = self.nullable
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Column:
        """Parse one column entry of a schema file."""
        try:
            name = str(data["name"])
            kind = str(data.get("type", ""))
            scale = int(data.get("scale", 0)) if kind == "decimal" else 0
            lo = hi = 0
            if kind in ("integer", "decimal", "date"):
                probe = cls(name, kind, scale=scale)
                lo = _to_units(probe, str(data["min"]))
                hi = _to_units(probe, str(data["max"]))
            cats = tuple(str(c) for c in data.get("categories", ()))
            return cls(name, kind, lo, hi, scale, cats, bool(data.get("nullable", True)))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"schema column {data!r}: missing or invalid {exc}") from None


#: Values are encoded as integers of at most this many digits (units: value * 10^scale).
_MAX_DIGITS = 18


def _to_units(col: Column, text: str) -> int:
    """A non-null value in units; ValueError when it does not parse.

    Messages name the problem, never the value: a cell may hold anything a patient
    record holds, and errors end up in terminals, logs and reports.
    """
    if col.kind == "integer":
        try:
            value = int(text)
        except ValueError:
            raise ValueError("not an integer") from None
        if abs(value) >= 10**_MAX_DIGITS:
            raise ValueError("integer out of range")
        return value
    if col.kind == "decimal":
        try:
            d = Decimal(text)
        except InvalidOperation:
            raise ValueError("not a decimal number") from None
        if not d.is_finite():
            raise ValueError("not a finite decimal number")
        if d and d.adjusted() + col.scale > _MAX_DIGITS:  # before any huge integer is made
            raise ValueError("decimal number out of range")
        try:
            scaled = d.scaleb(col.scale)
        except ArithmeticError:  # decimal.Overflow: an exponent beyond the context's
            raise ValueError("decimal number out of range") from None
        if scaled != scaled.to_integral_value():
            raise ValueError(f"more than {col.scale} decimals")
        return int(scaled)
    if col.kind == "date":
        try:
            return (_dt.date.fromisoformat(text) - _EPOCH).days
        except ValueError:
            raise ValueError("not a date (YYYY-MM-DD)") from None
    if col.kind == "boolean":
        low = text.lower()
        if low in _TRUE or low == "1":
            return 1
        if low in _FALSE or low == "0":
            return 0
        raise ValueError("not a boolean (true or false)")
    if col.kind == "categorical":
        try:
            return col.categories.index(text)
        except ValueError:
            raise ValueError("not one of the declared categories") from None
    raise ValueError(f"unknown column type {col.kind}")


def format_units(col: Column, units: int) -> Any:
    """Units back to a user value (int, str decimal, ISO date, bool, category)."""
    if col.kind == "decimal":
        return str(Decimal(units).scaleb(-col.scale))
    if col.kind == "date":
        return (_EPOCH + _dt.timedelta(days=units)).isoformat()
    if col.kind == "boolean":
        return bool(units)
    if col.kind == "categorical":
        return col.categories[units]
    return units


def parse_value(col: Column, text: str) -> int | None:
    """A CSV cell in units, None for NULL; ValueError naming the problem."""
    t = text.strip()
    if t.lower() in NULL_TOKENS:
        if not col.nullable:
            raise ValueError("empty value in a non-nullable column")
        return None
    if col.kind == "pseudonym":
        raise ValueError("pseudonym columns are not encoded as numbers")
    units = _to_units(col, t)
    if col.kind in ("integer", "decimal", "date") and not col.min <= units <= col.max:
        raise ValueError(
            f"outside the declared range [{format_units(col, col.min)}, "
            f"{format_units(col, col.max)}]"
        )
    return units


@dataclass(frozen=True)
class Schema:
    """An ordered list of columns."""

    columns: tuple[Column, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [c.name.lower() for c in self.columns]
        if len(set(names)) != len(names):
            raise InputError("duplicate column names in schema")
        if not self.columns:
            raise InputError("a schema needs at least one column")

    def column(self, name: str) -> Column:
        """The column called ``name`` (case-insensitive)."""
        for c in self.columns:
            if c.name.lower() == name.lower():
                return c
        raise InputError(f"no column {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML form."""
        return {"columns": [c.to_dict() for c in self.columns]}

    def to_yaml(self) -> str:
        """The schema file a data owner confirms."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any) -> Schema:
        """Parse the dict form."""
        if not isinstance(data, Mapping) or not isinstance(data.get("columns"), list):
            raise InputError("a schema is a mapping with a 'columns' list")
        return cls(tuple(Column.from_dict(c) for c in data["columns"]))

    @classmethod
    def from_yaml(cls, text: str | bytes) -> Schema:
        """Parse a schema file (its text, or its bytes: UTF-8)."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError("the schema file is not UTF-8") from None
        try:
            return cls.from_dict(yaml.safe_load(text))
        except yaml.YAMLError as exc:
            raise InputError(f"schema is not valid YAML: {exc}") from None
        except RecursionError:
            raise InputError("schema is nested too deeply") from None


def _is_int(v: str) -> bool:
    return re.fullmatch(r"[+-]?\d{1,15}", v) is not None


def _is_dec(v: str) -> bool:
    return re.fullmatch(r"[+-]?\d{0,15}\.\d{1,6}", v) is not None


def _is_date(v: str) -> bool:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) is None:
        return False
    try:
        _dt.date.fromisoformat(v)
    except ValueError:
        return False
    return True


def infer_schema(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, keys: Sequence[str] = ()
) -> Schema:
    """Guess a schema from CSV cells; ``keys`` name pseudonym (linkage) columns.

    Bounds are the observed range; the data owner confirms or widens them in the
    written YAML before other hospitals append.
    """
    lower_keys = {k.lower() for k in keys}
    wanted = [j for j, name in enumerate(header) if name.lower() not in lower_keys]
    values: list[set[str]] = [set() for _ in header]  # distinct texts only: rows stream by
    for row in rows:
        for j in wanted:
            if j < len(row):
                c = row[j].strip()
                if c.lower() not in NULL_TOKENS:
                    values[j].add(c)
    cols = []
    for j, name in enumerate(header):
        distinct = values[j]
        nullable = True
        if name.lower() in lower_keys:
            cols.append(Column(name, "pseudonym", nullable=False))
            continue
        if not distinct:
            raise InputError(f"column {name}: no values to infer a type from")
        if all(_is_int(v) for v in distinct):
            ints = [int(v) for v in distinct]
            if distinct <= {"0", "1"}:
                cols.append(Column(name, "boolean", nullable=nullable))
            else:
                cols.append(Column(name, "integer", min(ints), max(ints), nullable=nullable))
        elif all(_is_int(v) or _is_dec(v) for v in distinct):
            scale = max(len(v.split(".")[1]) if "." in v else 0 for v in distinct)
            units = [int(Decimal(v).scaleb(scale)) for v in distinct]
            cols.append(Column(name, "decimal", min(units), max(units), scale, (), nullable))
        elif all(_is_date(v) for v in distinct):
            days = [(_dt.date.fromisoformat(v) - _EPOCH).days for v in distinct]
            cols.append(Column(name, "date", min(days), max(days), nullable=nullable))
        elif {v.lower() for v in distinct} <= _TRUE | _FALSE:
            cols.append(Column(name, "boolean", nullable=nullable))
        elif len(distinct) <= _MAX_CATEGORIES:
            cols.append(Column(name, "categorical", categories=tuple(sorted(distinct))))
        else:
            raise InputError(
                f"column {name}: {len(distinct)} distinct text values; declare it a "
                "pseudonym key (--key) or drop it"
            )
    return Schema(tuple(cols))

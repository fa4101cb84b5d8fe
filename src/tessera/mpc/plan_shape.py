"""Shape checks for the JSON form of a secure plan (:mod:`tessera.mpc.plan`).

Each check raises :class:`~tessera.errors.InputError` with one line starting ``plan:``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tessera.errors import InputError
from tessera.mpc.jobs import _NAME

__all__ = ["MAX_INT", "MAX_LIST", "MAX_TEXT"]

MAX_LIST = 1024  # columns, parts, measures, aggregates, items, categories, IN values
MAX_TEXT = 4096  # characters of an expression or a name shown to the requester
MAX_INT = 1 << 62  # bound of any unit value, index or LIMIT


def _check(ok: bool, reason: str) -> None:
    if not ok:
        raise InputError(f"plan: {reason}")


def _named(value: str, what: str, pattern: re.Pattern[str] = _NAME) -> None:
    _check(pattern.fullmatch(value) is not None, f"{what} {value[:40]!r} is not a valid name")


def _text(value: str, what: str) -> None:
    _check(0 < len(value) <= MAX_TEXT, f"{what} is empty or longer than {MAX_TEXT} characters")


def _few(values: Sequence[Any], what: str, limit: int = MAX_LIST) -> None:
    _check(len(values) <= limit, f"{what} has more than {limit} entries")


def _within(value: int | None, what: str, low: int = -MAX_INT) -> None:
    _check(value is None or low <= value <= MAX_INT, f"{what} {value} is out of range")


def _obj(value: Any, what: str, keys: Sequence[str], optional: Sequence[str] = ()) -> Any:
    if not isinstance(value, dict):
        raise InputError(f"plan: {what} must be an object")
    missing = [k for k in keys if k not in value]
    if missing:
        raise InputError(f"plan: {what} has no {missing[0]!r}")
    unknown = [str(k) for k in value if k not in keys and k not in optional]
    if unknown:
        raise InputError(f"plan: {what} has an unknown key {unknown[0][:40]!r}")
    return value


def _list(value: Any, what: str, limit: int = MAX_LIST) -> list[Any]:
    if not isinstance(value, list):
        raise InputError(f"plan: {what} must be a list")
    _few(value, what, limit)
    return value


def _map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InputError(f"plan: {what} must be an object")
    _few(list(value), what)
    return value

"""Reading and writing the CSV tables that risk assessment works on."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from tessera.errors import InputError

__all__ = ["read_csv", "write_csv"]


def read_csv(path: str | Path, *, text_columns: Iterable[str] = ()) -> pl.DataFrame:
    """A CSV file with a header row as a DataFrame; malformed input raises InputError.

    ``text_columns`` are read as text (keeps leading zeros of codes such as ZIP codes).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no such file: {p}")
    overrides = {c: pl.String for c in text_columns}
    try:
        df = pl.read_csv(
            p,
            infer_schema_length=10_000,
            schema_overrides=overrides or None,
            try_parse_dates=False,
        )
    except pl.exceptions.NoDataError as exc:
        raise InputError(f"{p.name} is empty") from exc
    except (pl.exceptions.ComputeError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{p.name} is not a readable CSV table: {first[:160]}") from exc
    if df.width == 0:
        raise InputError(f"{p.name} has no columns")
    if len(set(df.columns)) != df.width:
        raise InputError(f"{p.name} repeats a column name")
    return df


def write_csv(df: pl.DataFrame, path: str | Path) -> None:
    """Write ``df`` to ``path`` atomically (temporary file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        df.write_csv(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

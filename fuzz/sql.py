"""Fuzz the SQL compiler (``tessera.mpc.sql.compile_sql``: sqlglot parse, then plan)."""

from __future__ import annotations

import logging
from typing import Any

from fuzz.harness import instrumented, run, tessera_only, text_of

with instrumented(__name__):
    from tessera.mpc.sql import compile_sql
    from tessera.tables.encode import column_info
    from tessera.tables.schema import Column

_COLS = (
    Column("pid", "pseudonym", nullable=False),
    Column("age", "integer", 18, 100),
    Column("load", "integer", 0, 100000),
    Column("bmi", "decimal", 120, 600, scale=1),
    Column("sex", "categorical", categories=("F", "M")),
    Column("smoker", "boolean"),
    Column("visit", "date", 16000, 20000),
)
logging.getLogger("sqlglot").setLevel(logging.ERROR)  # "falling back to a Command" notes
TABLES: dict[str, Any] = {
    "t": {"name": "t", "columns": [column_info(c) for c in _COLS], "hospitals": ["H1", "H2"]},
    "u": {"name": "u", "columns": [column_info(c) for c in _COLS[:3]], "hospitals": ["H1"]},
}


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    compile_sql(text_of(data), TABLES, min_group=5)


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()

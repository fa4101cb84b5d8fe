"""Fuzz table import: read a CSV, infer its schema, encode its rows against the
inferred schema and against a declared one (``tessera.tables.encode``)."""

from __future__ import annotations

from fuzz.harness import instrumented, run, tessera_only

with instrumented(__name__):
    from tessera.tables.encode import encode_rows, read_csv
    from tessera.tables.schema import Column, Schema, infer_schema

_DECLARED = Schema(
    (
        Column("pid", "pseudonym", nullable=False),
        Column("age", "integer", 0, 120),
        Column("bmi", "decimal", 100, 600, scale=1),
        Column("sex", "categorical", categories=("F", "M")),
        Column("smoker", "boolean"),
        Column("visit", "date", 0, 30000),
    )
)
_LINKAGE_KEY = b"\x01" * 32


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    header, rows = read_csv(data)
    encode_rows(_DECLARED, header, rows, linkage_key=_LINKAGE_KEY)
    keys = header[:1]
    schema = infer_schema(header, (r for _, r in rows), keys=keys)
    encode_rows(schema, header, rows, linkage_key=_LINKAGE_KEY)


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()

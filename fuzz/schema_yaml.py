"""Fuzz the table schema file loader (``tessera.tables.schema.Schema.from_yaml``)."""

from __future__ import annotations

from fuzz.harness import instrumented, run, tessera_only

with instrumented(__name__):
    from tessera.tables.schema import Schema


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    schema = Schema.from_yaml(data)
    Schema.from_yaml(schema.to_yaml())


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()

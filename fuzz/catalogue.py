"""Fuzz reading one vault catalogue entry: combine its fragments, decode the manifest
(``tessera.vault.catalogue.combine_manifest``; signatures stubbed to accept)."""

from __future__ import annotations

from fuzz.harness import AcceptAll, instrumented, run, split_parts, tessera_only

with instrumented(__name__):
    from tessera.vault.catalogue import combine_manifest


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    combine_manifest(split_parts(data), AcceptAll())


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()

"""Fuzz the vault manifest decoder (``tessera.vault.manifest.decode``).

The signature check is stubbed to accept, so the fuzzer reaches the body parser too
(a manifest signed by the owner's key is still outside input to every reader)."""

from __future__ import annotations

from fuzz.harness import AcceptAll, instrumented, run, tessera_only

with instrumented(__name__):
    from tessera.vault.manifest import decode


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    decode(data, AcceptAll())


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()

"""Fuzz the STIX 2.1 bundle check (``tessera.monitor.stix.validate_stix``, stix2-validator)
on fuzzed JSON bundles.  (``tessera.monitor.sharing`` only pushes bundles out; nothing
in Tessera imports a bundle from a partner, so this check is the STIX input parser.)"""

from __future__ import annotations

from fuzz.harness import NOT_JSON, instrumented, json_or_none, run, tessera_only

with instrumented(__name__):
    from tessera.monitor.stix import validate_stix


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    bundle = json_or_none(data)
    if bundle is NOT_JSON or not isinstance(bundle, dict):
        return
    validate_stix(bundle)


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()

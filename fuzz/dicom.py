"""Fuzz DICOM de-identification on fuzzed file bytes (``tessera.dicom.deidentify_bytes``:
pydicom parse, burned-in text checks, the profile walk, re-encoding).  The first byte
picks the profile options; the rest is the file."""

from __future__ import annotations

from fuzz.harness import instrumented, run, tessera_only

with instrumented(__name__, extra=["pydicom"]):
    from tessera.dicom import Option, Profile, Pseudonymizer, deidentify_bytes

_OPTIONS = tuple(Option)
_PSEUDO = Pseudonymizer(bytes(range(32)))


def _profile(selector: int) -> Profile:
    chosen = {o for j, o in enumerate(_OPTIONS[:8]) if selector >> j & 1}
    if Option.RETAIN_FULL_DATES in chosen:
        chosen.discard(Option.RETAIN_MODIFIED_DATES)
    return Profile(frozenset(chosen))


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    if not data:
        return
    outcome = deidentify_bytes(data[1:], _profile(data[0]), _PSEUDO)
    assert outcome.status in ("deidentified", "quarantined", "failed")
    assert outcome.status != "deidentified" or outcome.data


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()

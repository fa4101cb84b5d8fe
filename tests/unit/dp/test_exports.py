"""The public API of tessera.dp is exactly its __all__, with no OpenDP types in it."""

from __future__ import annotations

import inspect

import tessera.dp


def test_exported_members() -> None:
    public = {n for n in dir(tessera.dp) if not n.startswith("_")}
    modules = {"accounting", "ledger", "plan", "policy", "release"}
    assert public - modules == set(tessera.dp.__all__)


def test_no_opendp_types_in_signatures() -> None:
    for name in tessera.dp.__all__:
        obj = getattr(tessera.dp, name)
        targets = [obj] + [m for _, m in inspect.getmembers(obj, inspect.isfunction)]
        for target in targets:
            if callable(target):
                try:
                    sig = str(inspect.signature(target))
                except (TypeError, ValueError):
                    continue
                assert "opendp" not in sig.lower(), (name, sig)

"""The public names of tessera.audit and tessera.monitor exist and are unique."""

from __future__ import annotations

import pytest

import tessera.audit
import tessera.core.audit_sink
import tessera.core.merkle
import tessera.monitor


@pytest.mark.parametrize(
    "module", [tessera.audit, tessera.monitor, tessera.core.audit_sink, tessera.core.merkle]
)
def test_exported_members(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(module, name), name

"""tessera.risk's public names exist, are sorted, and the package stays on layer L1."""

from __future__ import annotations

import ast
from pathlib import Path

import tessera.risk as risk


def test_exported_members() -> None:
    assert risk.__all__ == sorted(risk.__all__)
    for name in risk.__all__:
        assert hasattr(risk, name), name


def test_imports_only_core_and_errors_from_tessera() -> None:
    root = Path(risk.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("tessera")
            ):
                assert node.module.split(".")[1] in ("risk", "core", "errors"), (path, node.module)

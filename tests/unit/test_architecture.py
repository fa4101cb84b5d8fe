"""House rules that keep the code base in shape: layering, light imports, public API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tessera

SRC = Path(tessera.__file__).parent
LAYERS = {
    "errors": 0,
    "version": 0,
    "core": 1,
    **{
        p: 2
        for p in (
            "keys",
            "vault",
            "tables",
            "mpc",
            "dp",
            "he",
            "dicom",
            "risk",
            "audit",
            "monitor",
            "samples",
        )
    },
    "config": 3,
    "workflows": 4,
    "cli": 5,
    "server": 5,
    "node": 5,
}
HEAVY = (
    "mpyc",
    "opendp",
    "tenseal",
    "pydicom",
    "pynetdicom",
    "fastapi",
    "sklearn",
    "duckdb",
    "polars",
    "s3fs",
    "stix2",
)


def _package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "tessera" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_layers_import_only_downward() -> None:
    """A lower layer never imports a higher one; L1 siblings never import each other."""
    violations = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        own = rel.parts[0].removesuffix(".py")
        if own not in LAYERS:
            continue
        for module in _imports(path):
            other = _package(module)
            if other is None or other == own or other not in LAYERS:
                continue
            if LAYERS[other] > LAYERS[own] or (LAYERS[other] == LAYERS[own] == 2):
                violations.append(f"{rel} imports {module}")
    assert violations == []


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint)], capture_output=True, text=True, check=False, cwd=SRC.parents[1]
    )
    assert done.returncode == 0, done.stdout[-3000:]


def test_core_stays_pure() -> None:
    banned = {
        "fsspec",
        "mpyc",
        "opendp",
        "pydicom",
        "fastapi",
        "pydantic",
        "typer",
        "rich",
        "random",
        "logging",
        "requests",
        "httpx",
        "socket",
        "subprocess",
    }
    for path in (SRC / "core").rglob("*.py"):
        for module in _imports(path):
            assert module.split(".")[0] not in banned, f"{path.name} imports {module}"


def test_cli_starts_without_heavy_engines() -> None:
    """`tessera share ...` must not import the heavy engines (start-up time)."""
    code = (
        "import sys; from tessera.cli.main import build_app; build_app('share'); "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_exported_members_are_documented() -> None:
    for name in tessera.__all__:
        assert hasattr(tessera, name)
    import tessera.core.fragment as fragment
    import tessera.core.shamir as shamir

    for module in (fragment, shamir):
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj):
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"


def test_no_dumping_ground_modules_and_no_giant_modules() -> None:
    for path in SRC.rglob("*.py"):
        assert path.name not in {"utils.py", "helpers.py", "misc.py"}, path
        if path.name.startswith("_profile_table"):
            continue  # generated data table
        lines = path.read_text(encoding="utf-8").count("\n")
        assert lines <= 800, f"{path.relative_to(SRC)} has {lines} lines: split it"

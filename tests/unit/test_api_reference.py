"""The HTTP API reference (docs/api.md) is generated from the gateway's OpenAPI schema
by docs/gen_api.py; it must match the API as the code defines it now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_DOCS = Path(__file__).resolve().parents[2] / "docs"
_SPEC = importlib.util.spec_from_file_location("gen_api", _DOCS / "gen_api.py")
assert _SPEC is not None and _SPEC.loader is not None
gen_api = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gen_api)


def test_the_api_reference_is_up_to_date() -> None:
    spec = gen_api.gateway_schema()
    committed = (_DOCS / "api.md").read_text(encoding="utf-8")
    assert committed == gen_api.render(spec), (
        "docs/api.md is stale: run .venv/bin/python docs/gen_api.py"
    )
    for path, item in spec["paths"].items():
        for method in item:
            assert f"### `{method.upper()} {path}`" in committed, (method, path)
    assert "### ErrorBody" in committed


def test_a_changed_operation_makes_the_reference_stale() -> None:
    spec = gen_api.gateway_schema()
    spec["paths"]["/api/v1/health"]["get"]["summary"] = "Something else"
    assert gen_api.render(spec) != (_DOCS / "api.md").read_text(encoding="utf-8")

"""Issue #17: the published API is OpenAPI 3.1 with the bearer scheme, every error
response and a schema for every answer, shown offline at /docs."""

from __future__ import annotations

import re
from importlib import resources

from openapi_spec_validator import validate

from tessera.server.models import OwnBalance
from tessera.server.routes import own_balance

from .conftest import Site


def test_openapi_is_valid_3_1_with_bearer_errors_and_answer_schemas(site: Site) -> None:
    resp = site.client().get("/openapi.json")
    assert resp.status_code == 200
    spec = resp.json()
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    error_ref = "#/components/schemas/ErrorBody"
    for path, item in spec["paths"].items():
        for method, op in item.items():
            ok = op["responses"]["200"]["content"]["application/json"]["schema"]
            assert ok != {} and "additionalProperties" not in ok, (method, path)
            for status in ("401", "403", "404", "422", "429", "500", "503"):
                schema = op["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, (method, path, status)
            assert (path == "/api/v1/health") == ("security" not in op), (method, path)


def test_docs_page_works_offline(site: Site) -> None:
    client = site.client()
    page = client.get("/docs")
    assert page.status_code == 200 and "/docs.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = client.get("/docs.js")
    assert script.status_code == 200 and "/openapi.json" in script.text
    assert "innerHTML" not in script.text
    static = resources.files("tessera.server") / "static"
    for name in ("docs.html", "docs.js"):
        text = (static / name).read_text()
        assert not re.search(r"https?://", text), name  # nothing from a CDN


def test_a_researchers_budget_row_has_no_table_totals() -> None:
    row = {
        "table": "private",
        "policy": {"default_epsilon": 1.0, "max_epsilon": None, "total_epsilon": 2.0},
        "total_rho": 0.5,
        "spent_rho": 0.4,  # everyone's
        "pending_rho": 0.01,
        "remaining_rho": 0.09,
        "remaining_epsilon": 0.3,
        "delta": 1e-6,
        "researcher": "rita",
        "researcher_total_rho": 0.2,
        "researcher_spent_rho": 0.05,
    }
    own = own_balance(row)
    assert set(own.model_dump()) == set(OwnBalance.model_fields)
    assert own.spent_rho == 0.05 and own.share_rho == 0.2
    assert own.remaining_rho == 0.2 - 0.05
    assert 0.4 not in own.model_dump().values() and 0.09 not in own.model_dump().values()

"""Write docs/api.md, the gateway's HTTP API reference, from its OpenAPI schema.

    .venv/bin/python docs/gen_api.py           # (re)write docs/api.md
    .venv/bin/python docs/gen_api.py --check   # exit 1 when docs/api.md is stale

The schema is the one the gateway serves at ``/openapi.json``: ``create_app`` over a
throwaway embedded environment in a temporary folder (the schema does not depend on
the environment).  ``make docs`` runs the check; tests/unit/server/test_api_reference.py
does too, so a change to the API without a regenerated reference fails the tests.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TARGET = Path(__file__).resolve().parent / "api.md"
_METHODS = ("get", "post", "put", "patch", "delete")
_REF = "#/components/schemas/"

Spec = dict[str, Any]


@contextmanager
def _scratch_environment() -> Iterator[Path]:
    """A temporary folder holding an environment, with this account's configuration
    (the remembered home, the audit unlock key) kept inside it too."""
    keys = ("XDG_CONFIG_HOME", "TESSERA_AUDIT_UNLOCK_FILE")
    saved = {key: os.environ.get(key) for key in keys}
    with tempfile.TemporaryDirectory(prefix="tessera-api-doc-") as scratch:
        os.environ["XDG_CONFIG_HOME"] = str(Path(scratch) / "config")
        os.environ["TESSERA_AUDIT_UNLOCK_FILE"] = str(Path(scratch) / "audit-unlock.key")
        try:
            yield Path(scratch) / "home"
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def gateway_schema() -> Spec:
    """The OpenAPI document the gateway serves at /openapi.json."""
    from tessera.server.app import create_app
    from tessera.workflows.audit import close_logs
    from tessera.workflows.environment import init_environment

    with _scratch_environment() as home:
        init_environment(home, nodes=3, passphrase=b"api reference, never used")
        app = create_app(home)
        try:
            spec: Spec = app.openapi()
        finally:
            app.state.gate.queries.close()
            app.state.gate.journal.close()
            close_logs()
    return spec


def _cell(text: str) -> str:
    """``text`` on one line, safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _rst_to_md(text: str) -> str:
    return text.replace("``", "`")


def _anchor(name: str) -> str:
    return "model-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _op_anchor(method: str, path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{method} {path}".lower()).strip("-")


def type_of(schema: Spec) -> str:
    """A schema as a short phrase, models as links to their section."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix(_REF)
        return f"[{name}](#{_anchor(name)})"
    if "anyOf" in schema:
        return " or ".join(type_of(option) for option in schema["anyOf"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return "array of " + type_of(schema.get("items", {}))
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return "object of " + type_of(extra)
        return "object"
    if kind == "string" and schema.get("format") == "binary":
        return "bytes"
    if kind is None:
        return "any"
    return str(kind)


def _limits(schema: Spec) -> list[str]:
    """The constraints of a schema (or of the non-null option of an ``anyOf``)."""
    options = schema.get("anyOf", [schema])
    words = []
    for option in options:
        for key, word in (
            ("minLength", "min length"),
            ("maxLength", "max length"),
            ("minimum", "≥"),
            ("maximum", "≤"),
            ("pattern", "pattern"),
        ):
            if key in option:
                value = option[key]
                words.append(f"{word} `{value}`" if key == "pattern" else f"{word} {value}")
    if "default" in schema:
        default = schema["default"]
        words.append(f"default `{json.dumps(default)}`")
    return words


def _roles(op: Spec) -> str | None:
    """The roles an operation's schema names (``x-roles``), if it names them."""
    roles = op.get("x-roles")
    return ", ".join(roles) if roles else None


def _errors(spec: Spec) -> dict[str, str]:
    """status -> description of the error responses (every status but 2xx), in order."""
    found: dict[str, str] = {}
    for item in spec["paths"].values():
        for method in _METHODS:
            for status, response in item.get(method, {}).get("responses", {}).items():
                if not status.startswith("2"):
                    found.setdefault(status, response.get("description", ""))
    return dict(sorted(found.items()))


def _body(response: Spec) -> str:
    content = response.get("content") or {}
    parts = [f"{type_of(media.get('schema', {}))} (`{kind}`)" for kind, media in content.items()]
    return ", ".join(parts) or "none"


def _operation(method: str, path: str, op: Spec, errors: dict[str, str]) -> list[str]:
    lines = [f"### `{method.upper()} {path}` {{#{_op_anchor(method, path)}}}", ""]
    if op.get("summary"):
        lines += [_rst_to_md(op["summary"]) + ".", ""]
    if op.get("description"):
        lines += [_rst_to_md(op["description"]).strip(), ""]
    auth = "bearer token" if "security" in op else "none"
    lines.append(f"- **Authentication:** {auth}")
    roles = _roles(op)
    if roles:
        lines.append(f"- **Roles:** {roles}")
    body = op.get("requestBody")
    if body:
        required = "required" if body.get("required") else "optional"
        note = f"; {_cell(body['description'])}" if body.get("description") else ""
        lines.append(f"- **Request body** ({required}{note}): {_body(body)}")
    lines.append("")
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | notes |", "|---|---|---|---|---|"]
        for param in params:
            schema = param.get("schema", {})
            notes = [param["description"]] if param.get("description") else []
            notes += _limits(schema)
            lines.append(
                f"| `{param['name']}` | {param['in']} | {_cell(type_of(schema))} | "
                f"{'yes' if param.get('required') else 'no'} | {_cell('; '.join(notes))} |"
            )
        lines.append("")
    lines += ["| status | meaning | body |", "|---|---|---|"]
    common = []
    for status, response in op.get("responses", {}).items():
        description = response.get("description", "")
        if errors.get(status) == description and _body(response).startswith("[ErrorBody]"):
            common.append(status)
            continue
        lines.append(f"| {status} | {_cell(description)} | {_cell(_body(response))} |")
    if common:
        lines.append(
            f"| {', '.join(common)} | see [Errors](#errors) | "
            f"[ErrorBody](#{_anchor('ErrorBody')}) |"
        )
    return [*lines, ""]


def _model(name: str, schema: Spec) -> list[str]:
    lines = [f"### {name} {{#{_anchor(name)}}}", ""]
    if schema.get("description"):
        lines += [_rst_to_md(" ".join(schema["description"].split())), ""]
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    if properties:
        lines += ["| field | type | required | notes |", "|---|---|---|---|"]
        for field, prop in properties.items():
            notes = [prop["description"]] if prop.get("description") else []
            notes += _limits(prop)
            lines.append(
                f"| `{field}` | {_cell(type_of(prop))} | {'yes' if field in required else 'no'} "
                f"| {_cell('; '.join(notes))} |"
            )
        lines.append("")
    extra = schema.get("additionalProperties")
    if extra is False:
        lines += ["No other fields (`additionalProperties: false`).", ""]
    elif extra is True:
        lines += ["May carry further fields (`additionalProperties: true`).", ""]
    return lines


def render(spec: Spec) -> str:
    """docs/api.md for the OpenAPI document ``spec``."""
    info = spec["info"]
    errors = _errors(spec)
    schemes = spec.get("components", {}).get("securitySchemes", {})
    lines = [
        "# HTTP API reference",
        "",
        "<!-- Generated by docs/gen_api.py from the gateway's OpenAPI schema: do not edit;",
        "     run `.venv/bin/python docs/gen_api.py` after changing the API. -->",
        "",
        f"The {info['title']} API, version {info['version']} (OpenAPI {spec['openapi']}), "
        "as `tessera serve` publishes it at `/openapi.json` and shows it at `/docs`. "
        "Which role may call which operation is in the route table of "
        "[the gateway's API](gateway.md#api) (a summary below names the roles where they "
        "shape the answer); the gateway checks the role of every request.",
        "",
        _rst_to_md(info.get("description", "")),
        "",
        "## Authentication",
        "",
    ]
    for name, scheme in schemes.items():
        what = f" ({scheme['description']})" if scheme.get("description") else ""
        lines.append(
            f"- `{name}`: HTTP `{scheme.get('scheme', scheme.get('type'))}` authentication"
            f"{what}: send `Authorization: Bearer <token>`."
        )
    lines += [
        "",
        "Operations marked *Authentication: none* need no token.",
        "",
        "## Errors",
        "",
        "Every error, whatever its status, is one JSON object, "
        f"[ErrorBody](#{_anchor('ErrorBody')}):",
        "",
        "```json",
        '{"error": "forbidden", "message": "one line, safe to show"}',
        "```",
        "",
        "| status | meaning |",
        "|---|---|",
        *(f"| {status} | {_cell(description)} |" for status, description in errors.items()),
        "",
        "## Operations",
        "",
    ]
    for path, item in spec["paths"].items():
        for method in _METHODS:
            if method in item:
                lines += _operation(method, path, item[method], errors)
    lines += ["## Models", ""]
    for name, schema in sorted(spec.get("components", {}).get("schemas", {}).items()):
        lines += _model(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render(gateway_schema())
    if argv == ["--check"]:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is stale: run .venv/bin/python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

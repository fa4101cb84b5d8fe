"""Import CSVs as secret-shared tables; list and describe them (``tessera table``).

The client encodes and splits every column itself; each custodian receives only its
own shares (over mutual TLS).  Several hospitals append to one table: each append is a
chunk whose row count and origin (``hospital``) are public.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from tessera.config import Environment
from tessera.errors import InputError, UsageError
from tessera.tables.encode import (
    PRIME,
    Encoded,
    column_info,
    encode_rows,
    read_csv,
    share_parts,
)
from tessera.tables.schema import PUBLIC_ORIGIN, Schema, infer_schema, reserved_origin_message
from tessera.tables.store import Catalog, check_table_name, pack_chunk
from tessera.workflows.nodes import ensure_nodes

__all__ = [
    "check_square_sums",
    "describe_table",
    "import_csv",
    "linkage_key",
    "list_tables",
    "new_manifest",
    "read_schema",
    "split_origins",
    "upload_chunk",
]

_MAX_ERRORS_SHOWN = 5
_MAX_LABEL = 64
# What parse_value says of a value a wider table would take (never the value itself).
_OUTSIDE = ("outside the declared range", "not one of the declared categories")


def linkage_key(env: Environment, path: Path | None = None) -> bytes:
    """The data owners' linkage key (never sent to custodians); made on first use."""
    key_path = path if path is not None else env.home / "linkage.key"
    if key_path.exists():
        data = key_path.read_bytes()
        if len(data) < 16:
            raise InputError(f"linkage key {key_path} is too short")
        return data
    if path is not None:
        raise InputError(f"no linkage key at {path}")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        key = secrets.token_bytes(32)
        fh.write(key)
    return key


def new_manifest(name: str, env: Environment, schema: Schema, *, declared: bool) -> dict[str, Any]:
    """The catalogue manifest of a table without chunks yet."""
    return {
        "bounds": "declared" if declared else "inferred",
        "version": 1,
        "name": name,
        "prime": PRIME,
        "n": env.n,
        "t": env.mpc_threshold,
        "schema": schema.to_dict(),
        "columns": [column_info(c) for c in schema.columns],
        "chunks": [],
        "rows": 0,
        "hospitals": [],
    }


Rows = list[tuple[int, list[str]]]


def split_origins(
    header: list[str], rows: Rows, origin_column: str | None, label: str
) -> tuple[list[str], dict[str, Rows], list[str]]:
    """The header without the origin column, the rows per origin label, and bad rows.

    Without ``origin_column`` every row gets ``label``, and a column named ``hospital``
    (reserved: the public origin of each row) is refused with the fix.  With it, each
    distinct value of that column becomes the (public) origin label of its rows.
    """
    if origin_column is None:
        for h in header:
            if h.lower() == PUBLIC_ORIGIN:
                raise InputError(reserved_origin_message(h))
        return header, {label: rows}, []
    lower = [h.lower() for h in header]
    if origin_column.lower() not in lower:
        raise InputError(
            f"the CSV has no column {origin_column!r} (--origin-column names the column "
            "holding each row's hospital)"
        )
    j = lower.index(origin_column.lower())
    groups: dict[str, Rows] = {}
    errors: list[str] = []
    for line, row in rows:
        if len(row) != len(header):
            errors.append(f"line {line}: {len(row)} fields, expected {len(header)}")
            continue
        origin = row[j].strip()
        if not origin or len(origin) > _MAX_LABEL:
            errors.append(f"line {line}: the origin column must hold 1..{_MAX_LABEL} characters")
            continue
        groups.setdefault(origin, []).append((line, row[:j] + row[j + 1 :]))
    return header[:j] + header[j + 1 :], groups, errors


def _table_schema(
    env: Environment,
    name: str,
    header: list[str],
    rows: Rows,
    schema_path: Path | None,
    keys: tuple[str, ...],
) -> tuple[Schema, dict[str, Any], str | None]:
    """The table's schema, its current manifest, and where an inferred schema was written."""
    catalog = Catalog(env.home)
    if catalog.exists(name):
        manifest = catalog.get(name)
        schema = Schema.from_dict(manifest["schema"])
        if schema_path is not None and read_schema(schema_path) != schema:
            raise InputError(
                f"table {name} exists with a different schema: import without --schema, "
                f"or change the table first with 'tessera table alter {name} --schema FILE'"
            )
        return schema, manifest, None
    if schema_path is not None:
        schema = read_schema(schema_path)
        manifest = new_manifest(name, env, schema, declared=True)
        return schema, with_profile(manifest, schema_path), None
    schema = infer_schema(header, (r for _, r in rows), keys=keys)
    out = env.home / "tables" / f"{name}.schema.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(schema.to_yaml())
    return schema, new_manifest(name, env, schema, declared=False), str(out)


def with_profile(manifest: dict[str, Any], schema_path: Path) -> dict[str, Any]:
    """``manifest`` with the schema file's ``recommend:`` section (``tessera recommend``
    uses it when no --profile is given)."""
    try:
        doc = yaml.safe_load(schema_path.read_bytes())
    except (yaml.YAMLError, RecursionError):
        return manifest  # read_schema already refused a file that does not parse
    section = doc.get("recommend") if isinstance(doc, dict) else None
    if isinstance(section, dict):
        return {**manifest, "recommend": json.loads(json.dumps(section, default=str))}
    return manifest


def read_schema(path: Path) -> Schema:
    """A schema YAML file; InputError naming the file when it is missing."""
    try:
        return Schema.from_yaml(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"no such schema file: {path}") from None


def _encode_groups(
    schema: Schema,
    header: list[str],
    groups: dict[str, Rows],
    lk: bytes | None,
    errors: list[str],
) -> list[tuple[str, Encoded]]:
    """Each origin's encoded rows (bad rows appended to ``errors``)."""
    out = []
    for origin, rows in groups.items():
        encoded = encode_rows(schema, header, rows, linkage_key=lk)
        errors.extend(encoded.errors)
        if encoded.rows:
            out.append((origin, encoded))
    return out


def _refuse_errors(name: str, errors: list[str], skip_invalid: bool) -> None:
    if not errors or skip_invalid:
        return
    errors.sort(key=_line_of)
    shown = "; ".join(errors[:_MAX_ERRORS_SHOWN])
    more = len(errors) - _MAX_ERRORS_SHOWN
    widen = any(o in e for e in errors for o in _OUTSIDE)
    raise InputError(
        f"{len(errors)} invalid rows, nothing stored: {shown}"
        + (f"; and {more} more" if more > 0 else "")
        + " (use --skip-invalid to store the valid rows"
        + (
            f", or widen the table first: tessera table alter {name} --bounds COL=MIN:MAX "
            "or --add-category COL=VALUE)"
            if widen
            else ")"
        )
    )


def _line_of(error: str) -> int:
    head = error.split(":", 1)[0]
    return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else 0


def check_square_sums(schema: Schema, rows: int) -> None:
    """InputError when a column's squares summed over ``rows`` could wrap the field."""
    for col in schema.columns:
        wide = max(abs(col.min), abs(col.max)) ** 2 * rows >= PRIME // 2
        if col.kind in ("integer", "decimal") and wide:
            raise InputError(f"column {col.name}: its range is too wide for sums of squares")


def upload_chunk(
    env: Environment, name: str, manifest: dict[str, Any], origin: str, encoded: Encoded
) -> dict[str, Any]:
    """Share one chunk to every custodian; the new manifest (written to the catalogue)."""
    chunk_id = secrets.token_hex(16)
    chunk = {"id": chunk_id, "hospital": origin, "rows": encoded.rows}
    updated = dict(manifest)
    updated["chunks"] = [*manifest["chunks"], chunk]
    updated["rows"] = int(manifest["rows"]) + encoded.rows
    if origin not in manifest["hospitals"]:
        updated["hospitals"] = [*manifest["hospitals"], origin]
    shares = share_parts(encoded.parts, n=env.n, t=env.mpc_threshold)
    clients = ensure_nodes(env)
    try:
        for node_id, client in clients.items():
            party_manifest = dict(updated, party=node_id - 1)
            client.append(
                name, chunk_id, party_manifest, pack_chunk(shares[node_id - 1], encoded.keys)
            )
    finally:
        for c in clients.values():
            c.close()
    Catalog(env.home).put(name, updated)
    return updated


def import_csv(
    env: Environment,
    csv_path: Path,
    name: str,
    *,
    schema_path: Path | None = None,
    hospital: str | None = None,
    origin_column: str | None = None,
    skip_invalid: bool = False,
    keys: tuple[str, ...] = (),
    linkage_key_path: Path | None = None,
) -> dict[str, Any]:
    """Encode, split and upload ``csv_path`` as new chunks of table ``name``.

    One chunk per origin: ``hospital`` (default the file name), or, with
    ``origin_column``, one per distinct value of that column.  Every row is checked
    before anything is stored.
    """
    check_table_name(name)
    if hospital is not None and origin_column is not None:
        raise UsageError("give --hospital or --origin-column, not both")
    label = hospital if hospital else csv_path.stem
    if not label or len(label) > _MAX_LABEL:
        raise InputError(f"the hospital label must be 1..{_MAX_LABEL} characters")
    try:
        data = csv_path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"no such file: {csv_path}") from None
    header, groups, errors = split_origins(*read_csv(data), origin_column, label)
    every = [r for rows in groups.values() for r in rows]
    schema, manifest, schema_written = _table_schema(env, name, header, every, schema_path, keys)
    needs_key = any(c.kind == "pseudonym" for c in schema.columns)
    lk = linkage_key(env, linkage_key_path) if needs_key else None
    chunks = _encode_groups(schema, header, groups, lk, errors)
    _refuse_errors(name, errors, skip_invalid)
    added = sum(e.rows for _, e in chunks)
    if added == 0:
        raise InputError("no valid rows to import")
    check_square_sums(schema, int(manifest["rows"]) + added)
    for origin, encoded in chunks:
        manifest = upload_chunk(env, name, manifest, origin, encoded)
    return {
        "table": name,
        "hospital": ", ".join(origin for origin, _ in chunks),
        "chunks": [{"hospital": origin, "rows": e.rows} for origin, e in chunks],
        "rows": added,
        "total_rows": manifest["rows"],
        "skipped": [{"error": e} for e in sorted(errors, key=_line_of)],
        "schema_written": schema_written,
        "columns": [c.to_dict() for c in schema.columns],
    }


def list_tables(env: Environment) -> list[dict[str, Any]]:
    """Name, rows, columns and hospitals of every table in the catalogue."""
    catalog = Catalog(env.home)
    out = []
    for name in catalog.names():
        m = catalog.get(name)
        out.append(
            {
                "name": name,
                "rows": m["rows"],
                "columns": len(m["schema"]["columns"]),
                "hospitals": m["hospitals"],
            }
        )
    return out


def describe_table(env: Environment, name: str) -> dict[str, Any]:
    """Schema, encodings and chunks of table ``name``."""
    m = Catalog(env.home).get(name)
    return {
        "name": name,
        "rows": m["rows"],
        "hospitals": m["hospitals"],
        "chunks": m["chunks"],
        "columns": [
            {**c, "encoding": sorted(info["parts"])}
            for c, info in zip(m["schema"]["columns"], m["columns"], strict=True)
        ],
    }

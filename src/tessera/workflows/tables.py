"""Import CSVs as secret-shared tables; list and describe them (``tessera table``).

The client encodes and splits every column itself; each custodian receives only its
own shares (over mutual TLS).  Several hospitals append to one table: each append is a
chunk whose row count and origin (``hospital``) are public.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from tessera.config import Environment
from tessera.errors import InputError
from tessera.tables.encode import PRIME, column_info, encode_rows, read_csv, share_parts
from tessera.tables.schema import Schema, infer_schema
from tessera.tables.store import Catalog, check_table_name, pack_chunk
from tessera.workflows.nodes import ensure_nodes

__all__ = ["describe_table", "import_csv", "linkage_key", "list_tables"]

_MAX_ERRORS_SHOWN = 5


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


def _manifest(name: str, env: Environment, schema: Schema, *, declared: bool) -> dict[str, Any]:
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


def import_csv(
    env: Environment,
    csv_path: Path,
    name: str,
    *,
    schema_path: Path | None = None,
    hospital: str | None = None,
    skip_invalid: bool = False,
    keys: tuple[str, ...] = (),
    linkage_key_path: Path | None = None,
) -> dict[str, Any]:
    """Encode, split and upload ``csv_path`` as (a new chunk of) table ``name``."""
    check_table_name(name)
    catalog = Catalog(env.home)
    try:
        data = csv_path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"no such file: {csv_path}") from None
    header, rows = read_csv(data)
    schema_written = None
    if catalog.exists(name):
        manifest = catalog.get(name)
        schema = Schema.from_dict(manifest["schema"])
        if schema_path is not None and Schema.from_yaml(schema_path.read_text()) != schema:
            raise InputError(f"table {name} exists with a different schema")
    else:
        if schema_path is not None:
            schema = Schema.from_yaml(schema_path.read_text())
        else:
            schema = infer_schema(header, (r for _, r in rows), keys=keys)
            out = env.home / "tables" / f"{name}.schema.yaml"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(schema.to_yaml())
            schema_written = str(out)
        manifest = _manifest(name, env, schema, declared=schema_path is not None)
    origin = hospital if hospital else csv_path.stem
    if not origin or len(origin) > 64:
        raise InputError("the hospital label must be 1..64 characters")
    needs_key = any(c.kind == "pseudonym" for c in schema.columns)
    lk = linkage_key(env, linkage_key_path) if needs_key else None
    encoded = encode_rows(schema, header, rows, linkage_key=lk)
    if encoded.errors and not skip_invalid:
        shown = "; ".join(encoded.errors[:_MAX_ERRORS_SHOWN])
        more = len(encoded.errors) - _MAX_ERRORS_SHOWN
        raise InputError(
            f"{len(encoded.errors)} invalid rows, nothing stored: {shown}"
            + (f"; and {more} more" if more > 0 else "")
            + " (use --skip-invalid to store the valid rows)"
        )
    if encoded.rows == 0:
        raise InputError("no valid rows to import")
    for col in schema.columns:
        if col.kind in ("integer", "decimal"):
            bound = max(abs(col.min), abs(col.max)) ** 2 * (manifest["rows"] + encoded.rows)
            if bound >= PRIME // 2:
                raise InputError(f"column {col.name}: its range is too wide for sums of squares")
    chunk_id = secrets.token_hex(16)
    chunk = {"id": chunk_id, "hospital": origin, "rows": encoded.rows}
    new_manifest = dict(manifest)
    new_manifest["chunks"] = [*manifest["chunks"], chunk]
    new_manifest["rows"] = int(manifest["rows"]) + encoded.rows
    if origin not in manifest["hospitals"]:
        new_manifest["hospitals"] = [*manifest["hospitals"], origin]
    shares = share_parts(encoded.parts, n=env.n, t=env.mpc_threshold)
    clients = ensure_nodes(env)
    try:
        for node_id, client in clients.items():
            party_manifest = dict(new_manifest, party=node_id - 1)
            client.append(
                name, chunk_id, party_manifest, pack_chunk(shares[node_id - 1], encoded.keys)
            )
    finally:
        for c in clients.values():
            c.close()
    catalog.put(name, new_manifest)
    return {
        "table": name,
        "hospital": origin,
        "rows": encoded.rows,
        "total_rows": new_manifest["rows"],
        "skipped": [{"error": e} for e in encoded.errors],
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

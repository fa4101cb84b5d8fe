"""Import CSVs as secret-shared tables; list and describe them (``tessera table``).

The client encodes and splits every column itself; each custodian receives only its
own shares (over mutual TLS).  Several hospitals append to one table: each append is a
chunk whose row count and origin (``hospital``) are public.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from tessera.config import Environment
from tessera.core.chunkfile import keep_freed_memory
from tessera.errors import InputError, UsageError
from tessera.tables.encode import (
    PRIME,
    Encoded,
    column_info,
    encode_rows,
    parse_rows,
    parts_of,
)
from tessera.tables.schema import PUBLIC_ORIGIN, Schema, infer_schema, reserved_origin_message
from tessera.tables.store import Catalog, check_table_name
from tessera.tables.stream import Body, CsvSource, block_bodies, block_rows, no_gc
from tessera.workflows.nodes import ensure_nodes

__all__ = [
    "Progress",
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
_IN_FLIGHT = 2  # upload blocks queued per custodian while the next one is encoded
Progress = Callable[[int, int], None]  # (bytes of the CSV read so far, bytes in all passes)
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
    rows: Callable[[], Iterable[list[str]]],
    schema_path: Path | None,
    keys: tuple[str, ...],
) -> tuple[Schema, dict[str, Any], str | None]:
    """The table's schema, its current manifest, and where an inferred schema was
    written (``rows`` gives every row's cells, read only to infer a schema)."""
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
    schema = infer_schema(header, rows(), keys=keys)
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


@dataclass
class _Chunk:
    """One chunk being uploaded: its id, origin, rows, rows sent, rows waiting."""

    id: str
    origin: str
    rows: int
    sent: int = 0
    waiting: Rows = field(default_factory=list)


class _Uploader:
    """Sends upload blocks to every custodian, in order per custodian, a few in flight
    while the next block is encoded (one thread per custodian)."""

    def __init__(self, env: Environment, name: str, manifest: dict[str, Any]) -> None:
        self.env = env
        self.name = name
        self.manifest = manifest  # what the custodians hold (committed chunks)
        self.clients = ensure_nodes(env)
        self.pools = {i: ThreadPoolExecutor(1) for i in self.clients}
        keep_freed_memory()  # blocks of shares are allocated and freed by the thousand
        self.queued: deque[list[Future[None]]] = deque()

    def _with(self, chunk: _Chunk) -> dict[str, Any]:
        entry = {"id": chunk.id, "hospital": chunk.origin, "rows": chunk.rows}
        updated = dict(self.manifest)
        updated["chunks"] = [*self.manifest["chunks"], entry]
        updated["rows"] = int(self.manifest["rows"]) + chunk.rows
        if chunk.origin not in self.manifest["hospitals"]:
            updated["hospitals"] = [*self.manifest["hospitals"], chunk.origin]
        return updated

    def send(self, chunk: _Chunk, encoded: Encoded) -> None:
        """Share ``encoded`` (the chunk's next rows) and queue one block per custodian;
        the manifest (catalogue too) moves on when the chunk's last block is stored."""
        if encoded.rows == 0:
            return
        if chunk.sent + encoded.rows > chunk.rows:
            raise InputError("the CSV changed while it was imported: import it again")
        bodies = block_bodies(
            encoded,
            n=self.env.n,
            t=self.env.mpc_threshold,
            chunk_rows=chunk.rows,
            first_row=chunk.sent,
        )
        chunk.sent += encoded.rows
        updated = self._with(chunk)
        futures = [
            self.pools[i].submit(
                _upload, client, self.name, chunk.id, dict(updated, party=i - 1), bodies[i - 1]
            )
            for i, client in self.clients.items()
        ]
        self.queued.append(futures)
        while len(self.queued) > _IN_FLIGHT:
            self._wait()
        if chunk.sent == chunk.rows:
            self.drain()
            self.manifest = updated
            Catalog(self.env.home).put(self.name, updated)

    def _wait(self) -> None:
        for f in self.queued.popleft():
            f.result()

    def drain(self) -> None:
        while self.queued:
            self._wait()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        for c in self.clients.values():
            c.close()


def _upload(client: Any, name: str, chunk: str, manifest: dict[str, Any], body: Body) -> None:
    """One block to one custodian; its buffers are let go as soon as it is sent."""
    try:  # a Body is sent buffer by buffer (no joined copy); httpx takes it as content
        client.append(name, chunk, manifest, cast(bytes, body))
    finally:
        body.release()


def _slices(encoded: Encoded, size: int) -> Iterator[Encoded]:
    """``encoded`` in runs of at most ``size`` rows."""
    for start in range(0, max(encoded.rows, 1), size):
        stop = min(start + size, encoded.rows)
        yield Encoded(
            stop - start,
            {k: v[start:stop] for k, v in encoded.parts.items()},
            {k: v[start:stop] for k, v in encoded.keys.items()},
        )


def _subcolumns(schema: Schema) -> int:
    return sum(sum(parts_of(c).values()) for c in schema.columns)


def upload_chunk(
    env: Environment, name: str, manifest: dict[str, Any], origin: str, encoded: Encoded
) -> dict[str, Any]:
    """Share one encoded chunk to every custodian, block by block; the new manifest
    (written to the catalogue)."""
    chunk = _Chunk(secrets.token_hex(16), origin, encoded.rows)
    uploader = _Uploader(env, name, manifest)
    try:
        size = block_rows(sum(1 if v.ndim == 1 else v.shape[1] for v in encoded.parts.values()))
        for piece in _slices(encoded, size):
            uploader.send(chunk, piece)
        uploader.drain()
    finally:
        uploader.close()
    return uploader.manifest


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
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Encode, split and upload ``csv_path`` as new chunks of table ``name``.

    One chunk per origin: ``hospital`` (default the file name), or, with
    ``origin_column``, one per distinct value of that column.  Every row is checked
    before anything is stored: the file is read twice, block by block (three times to
    infer a schema), and never held whole; ``progress`` hears the bytes read.
    """
    check_table_name(name)
    if hospital is not None and origin_column is not None:
        raise UsageError("give --hospital or --origin-column, not both")
    label = hospital if hospital else csv_path.stem
    if not label or len(label) > _MAX_LABEL:
        raise InputError(f"the hospital label must be 1..{_MAX_LABEL} characters")
    source = CsvSource(csv_path)
    with no_gc():  # millions of small objects, no cycles that hold much (see _upload)
        return _import(
            env,
            source,
            name,
            schema_path,
            (label, origin_column),
            skip_invalid,
            keys,
            linkage_key_path,
            progress,
        )


def _import(
    env: Environment,
    source: CsvSource,
    name: str,
    schema_path: Path | None,
    origin: tuple[str, str | None],
    skip_invalid: bool,
    keys: tuple[str, ...],
    linkage_key_path: Path | None,
    progress: Progress | None,
) -> dict[str, Any]:
    label, origin_column = origin
    header, _, _ = split_origins(source.header, [], origin_column, label)
    infer = not Catalog(env.home).exists(name) and schema_path is None
    total = source.size * (3 if infer else 2)
    read = [0]

    def report(n: int) -> None:
        read[0] += n
        if progress is not None:
            progress(min(read[0], total), total)

    def groups(size: int) -> Iterator[tuple[dict[str, Rows], list[str]]]:
        for block in source.blocks(size, report):
            _, by_origin, bad = split_origins(source.header, block, origin_column, label)
            yield by_origin, bad

    def every() -> Iterator[list[str]]:
        for by_origin, _ in groups(65536):
            for rows in by_origin.values():
                for _, cells in rows:
                    yield cells

    schema, manifest, schema_written = _table_schema(env, name, header, every, schema_path, keys)
    needs_key = any(c.kind == "pseudonym" for c in schema.columns)
    lk = linkage_key(env, linkage_key_path) if needs_key else None
    size = block_rows(_subcolumns(schema))
    counts: dict[str, int] = {}  # origins in order of first appearance
    errors: list[str] = []
    for by_origin, bad in groups(size):  # pass 1: check every row
        errors.extend(bad)
        for origin_label, rows in by_origin.items():
            parsed = parse_rows(schema, header, rows, linkage_key=lk, hash_keys=False)
            errors.extend(parsed.errors)
            counts[origin_label] = counts.get(origin_label, 0) + parsed.rows
    _refuse_errors(name, errors, skip_invalid)
    added = sum(counts.values())
    if added == 0:
        raise InputError("no valid rows to import")
    check_square_sums(schema, int(manifest["rows"]) + added)
    chunks = {o: _Chunk(secrets.token_hex(16), o, n) for o, n in counts.items() if n}
    uploader = _Uploader(env, name, manifest)
    try:
        for by_origin, _ in groups(size):  # pass 2: encode, split, upload
            for origin_label, rows in by_origin.items():
                chunk = chunks.get(origin_label)
                if chunk is None:
                    continue
                chunk.waiting.extend(rows)
                if len(chunk.waiting) >= size:
                    uploader.send(chunk, encode_rows(schema, header, chunk.waiting, linkage_key=lk))
                    chunk.waiting = []
        for chunk in chunks.values():
            if chunk.waiting or chunk.sent < chunk.rows:
                uploader.send(chunk, encode_rows(schema, header, chunk.waiting, linkage_key=lk))
                chunk.waiting = []
            if chunk.sent != chunk.rows:
                raise InputError("the CSV changed while it was imported: import it again")
        uploader.drain()
    finally:
        uploader.close()
    return {
        "table": name,
        "hospital": ", ".join(chunks),
        "chunks": [{"hospital": c.origin, "rows": c.rows} for c in chunks.values()],
        "rows": added,
        "total_rows": uploader.manifest["rows"],
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

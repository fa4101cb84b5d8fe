"""Shared tables at rest: a custodian's share files and the requester's catalogue.

A custodian keeps, under its store folder, ``tables/NAME/manifest.json`` (schema, chunks,
prime, its party index) and one folder per appended chunk holding its Shamir shares
(uint64, values in GF(p)): one memory-mappable ``PART.npy`` per part, ``keys.json`` with
the clear pseudonym keys and ``chunk.json``, the checksummed index (the columnar chunk
format, version 2: :mod:`tessera.core.chunkfile`, docs/formats.md; version-1 folders,
without an index, still read).  A chunk is what one hospital appended: its row count
and origin are public.  A client uploads a chunk as a sequence of blocks of rows
(:func:`tessera.core.chunkfile.pack_block`), staged in ``.upload-CHUNK`` until the last
one arrives; a whole chunk as one npz archive (:func:`pack_chunk`, older clients) is
still accepted.  The requester's catalogue (``HOME/tables/NAME.json``) has the same
manifest without shares.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.npyio import NpzFile

from tessera.core import chunkfile
from tessera.core.chunkfile import BLOCK_MAGIC, ChunkWriter, pack_block, unpack_block
from tessera.errors import InputError, NotFoundError, StorageUnavailableError
from tessera.tables.reshape import check_widening, reshape_parts
from tessera.tables.schema import Schema

__all__ = [
    "Catalog",
    "ShareStore",
    "TableShares",
    "check_table_name",
    "pack_block",
    "pack_chunk",
    "unpack_chunk",
]

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_CHUNK = re.compile(r"^[0-9a-f]{8,64}$")
_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\.[a-z]{1,8}[0-9]{0,2}$")
U64Array = npt.NDArray[np.uint64]
_STALE_UPLOAD_S = 6 * 3600  # an upload staged longer ago than this was abandoned


def check_table_name(name: str) -> str:
    """``name`` if it is a valid table name, else InputError."""
    if not _TABLE.match(name):
        raise InputError(f"invalid table name {name!r} (letters, digits, _; 63 at most)")
    return name


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def pack_chunk(parts: dict[str, U64Array], keys: dict[str, list[str]]) -> bytes:
    """One chunk's shares and clear keys as bytes (npz; keys as a JSON member)."""
    buf = io.BytesIO()
    arrays: dict[str, Any] = {f"p:{k}": v for k, v in parts.items()}
    arrays["keys"] = np.frombuffer(json.dumps(keys).encode(), dtype=np.uint8)
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack_chunk(
    data: bytes | Path, wanted: set[str] | None = None
) -> tuple[dict[str, U64Array], dict[str, list[str]]]:
    """Inverse of :func:`pack_chunk` (only the parts in ``wanted`` when given)."""
    source: Any = data if isinstance(data, Path) else io.BytesIO(data)
    try:
        loaded = np.load(source, allow_pickle=False)
        if not isinstance(loaded, NpzFile):
            raise InputError("malformed table chunk (not an npz archive)")
        with loaded as z:
            parts = {
                k[2:]: np.asarray(z[k], dtype=np.uint64)
                for k in z.files
                if k[:2] == "p:" and (wanted is None or k[2:] in wanted)
            }
            keys = json.loads(bytes(z["keys"]).decode()) if "keys" in z.files else {}
    except InputError:
        raise
    except Exception as exc:  # numpy and zipfile on hostile bytes raise anything: BadZipFile,
        # zlib.error, EOFError, RuntimeError (an encrypted member), NotImplementedError, ...
        raise InputError(f"malformed table chunk ({exc.__class__.__name__})") from None
    if not isinstance(keys, dict) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in keys.values()
    ):
        raise InputError("malformed table chunk (keys)")
    return parts, keys


def _listed_rows(manifest: Any, chunk_id: str) -> int:
    """The row count the manifest gives for ``chunk_id``; InputError if not listed."""
    chunks = manifest.get("chunks") if isinstance(manifest, dict) else None
    if not isinstance(chunks, list):
        raise InputError("the manifest has no list of chunks")
    listed = next((c for c in chunks if isinstance(c, dict) and c.get("id") == chunk_id), None)
    if listed is None:
        raise InputError("the manifest does not list this chunk")
    rows = listed.get("rows")
    if type(rows) is not int or rows < 0:
        raise InputError("the manifest gives no row count for this chunk")
    return rows


@dataclass
class TableShares:
    """A table's shares at one custodian, chunks concatenated in order."""

    manifest: dict[str, Any]
    parts: dict[str, U64Array]
    keys: dict[str, list[str]]
    origins: list[str]  # one label per row (public)

    @property
    def rows(self) -> int:
        """Number of rows."""
        return len(self.origins)


class ShareStore:
    """A custodian's table shares under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        chunkfile.keep_freed_memory()  # uploads arrive as blocks of megabytes

    def _dir(self, name: str) -> Path:
        return self.root / "tables" / check_table_name(name)

    def manifest(self, name: str) -> dict[str, Any]:
        """The manifest of table ``name``; NotFoundError if absent."""
        path = self._dir(name) / "manifest.json"
        try:
            result: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFoundError(f"no table {name!r}") from None
        return result

    def tables(self) -> list[dict[str, Any]]:
        """Manifests of every table."""
        base = self.root / "tables"
        if not base.is_dir():
            return []
        return [
            self.manifest(p.name) for p in sorted(base.iterdir()) if (p / "manifest.json").exists()
        ]

    def append(self, name: str, manifest: dict[str, Any], chunk_id: str, data: bytes) -> None:
        """Store one upload of chunk ``chunk_id``: a block of its rows (the chunk and the
        new manifest are stored when its last block arrives) or, from older clients, the
        whole chunk as an npz archive.  Nothing is stored from a malformed upload."""
        if not _CHUNK.match(chunk_id):
            raise InputError("invalid chunk id")
        rows = _listed_rows(manifest, chunk_id)
        if (self._dir(name) / "manifest.json").exists():
            held = self.manifest(name).get("columns")
            if manifest.get("columns") != held:  # only `tessera table alter` changes them
                raise InputError(
                    f"table {name} has other columns at this custodian (altered since this "
                    "catalogue was written): import with the table's current schema"
                )
        block = unpack_block(data) if data[:8] == BLOCK_MAGIC else _npz_block(data, rows)
        if block.chunk_rows != rows:
            raise InputError("the block's chunk size differs from the manifest's")
        folder = self._dir(name)
        final = folder / chunk_id
        if final.exists():
            raise InputError(f"chunk {chunk_id[:12]} is already stored")
        staging = folder / f".upload-{chunk_id}"
        if block.first_row == 0:
            _clean_stale_uploads(folder)
            shutil.rmtree(staging, ignore_errors=True)  # a retried upload starts afresh
        elif not staging.is_dir():
            raise InputError(f"chunk {chunk_id[:12]}: no upload in progress for this block")
        writer = ChunkWriter(staging)
        try:
            last = writer.write(block)
            if last:
                writer.finish()
        except OSError as exc:  # a full disk, most likely: the upload is dropped
            shutil.rmtree(staging, ignore_errors=True)
            reason = exc.strerror or type(exc).__name__
            raise StorageUnavailableError(
                f"this custodian cannot store the chunk ({reason})"
            ) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if not last:
            return
        os.replace(staging, final)
        _atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1).encode())

    def chunk_dirs(self, name: str, chunk_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """``{"dir", "rows", "hospital"}`` of the listed chunks (all when None), in order."""
        manifest = self.manifest(name)
        folder = self._dir(name)
        by_id = {c["id"]: c for c in manifest["chunks"]}
        out = []
        for cid in list(by_id) if chunk_ids is None else chunk_ids:
            chunk = by_id.get(cid)
            path = folder / str(cid)
            if chunk is None or not _CHUNK.match(str(cid)) or not path.is_dir():
                raise NotFoundError(
                    f"table {name}: chunk {str(cid)[:12]} is missing at this custodian"
                )
            out.append(
                {"dir": str(path), "rows": int(chunk["rows"]), "hospital": chunk["hospital"]}
            )
        return out

    def load(
        self, name: str, wanted: set[str] | None = None, chunk_ids: list[str] | None = None
    ) -> TableShares:
        """Shares of table ``name``: only parts in ``wanted`` and chunks in ``chunk_ids``
        (read into memory and checked against their checksums)."""
        manifest = self.manifest(name)
        chunks = self.chunk_dirs(name, chunk_ids)
        parts: dict[str, list[U64Array]] = {}
        keys: dict[str, list[str]] = {}
        origins: list[str] = []
        for chunk in chunks:
            folder = Path(chunk["dir"])
            for part, arr in _read_parts(folder, wanted).items():
                parts.setdefault(part, []).append(arr)
            for k, v in _read_keys(folder).items():
                keys.setdefault(k, []).extend(v)
            origins.extend([str(chunk["hospital"])] * chunk["rows"])
        merged = {k: np.concatenate(v) for k, v in parts.items()}
        return TableShares(manifest, merged, keys, origins)

    def remove(self, name: str) -> bool:
        """Delete table ``name`` (its shares and manifest); False if it was not here."""
        folder = self._dir(name)
        if not folder.is_dir():
            return False
        gone = folder.with_name(f".removed-{name}-{os.getpid()}-{secrets.token_hex(4)}")
        os.replace(folder, gone)  # one atomic step: the table is gone for every reader
        shutil.rmtree(gone, ignore_errors=True)
        return True

    def reshape(self, name: str, manifest: dict[str, Any], new_schema: Schema) -> None:
        """Re-encode every stored chunk of ``name`` for ``new_schema`` (a widening, see
        :mod:`tessera.tables.reshape`), then write ``manifest``.  The chunks are written
        anew in the current format (version 2)."""
        old_schema = Schema.from_dict(self.manifest(name)["schema"])
        check_widening(old_schema, new_schema)
        staged = []
        for chunk in self.chunk_dirs(name):
            folder = Path(chunk["dir"])
            parts = _read_parts(folder, None)
            keys = _read_keys(folder)
            tmp = folder.with_name(f".{folder.name}.{os.getpid()}.reshape")
            shutil.rmtree(tmp, ignore_errors=True)
            new_parts = reshape_parts(old_schema, new_schema, parts)
            _write_chunk(tmp, new_parts, keys, int(chunk["rows"]))
            staged.append((folder, tmp))
        for folder, tmp in staged:  # every chunk re-encoded before any is replaced
            old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        _atomic_write(self._dir(name) / "manifest.json", json.dumps(manifest, indent=1).encode())


def _npz_block(data: bytes, rows: int) -> chunkfile.Block:
    """A whole chunk uploaded as an npz archive (:func:`pack_chunk`) as one block."""
    parts, keys = unpack_chunk(data)  # validate before storing anything
    cols: dict[str, int] = {}
    columns: dict[str, U64Array] = {}
    for part, arr in parts.items():
        if not _PART.match(part) or arr.ndim not in (1, 2) or arr.shape[0] != rows:
            raise InputError(f"malformed part {part[:70]!r} in the chunk")
        if arr.size and int(arr.max()) >= (1 << 61) - 1:
            raise InputError(f"malformed part {part[:70]!r} in the chunk (outside the field)")
        cols[part] = 0 if arr.ndim == 1 else int(arr.shape[1])
        columns[part] = np.ascontiguousarray(arr.reshape(rows, max(cols[part], 1)).T)
    if any(len(v) != rows for v in keys.values()) or not all(_PART.match(f"{k}.key") for k in keys):
        raise InputError("malformed keys in the chunk")
    return chunkfile.Block(rows, 0, rows, cols, columns, keys)


def _write_chunk(
    folder: Path, parts: dict[str, U64Array], keys: dict[str, list[str]], rows: int
) -> None:
    """Write a whole chunk (parts ``(rows,)`` or ``(rows, cols)``) in format version 2."""
    cols = {p: 0 if a.ndim == 1 else int(a.shape[1]) for p, a in parts.items()}
    columns = {
        p: np.ascontiguousarray(np.asarray(a).reshape(rows, max(cols[p], 1)).T)
        for p, a in parts.items()
    }
    writer = ChunkWriter(folder)
    writer.write(chunkfile.Block(rows, 0, rows, cols, columns, keys))
    writer.finish()


def _read_parts(folder: Path, wanted: set[str] | None) -> dict[str, U64Array]:
    """Every part of the chunk in ``folder`` (or those in ``wanted``), in memory and
    checked against the index's checksums (a version-1 chunk has none)."""
    index = chunkfile.read_index(folder)
    names = (
        sorted(index.parts)
        if index is not None
        else sorted(p.name[: -len(".npy")] for p in folder.glob("*.npy"))
    )
    out: dict[str, U64Array] = {}
    for part in names:
        if wanted is not None and part not in wanted:
            continue
        arr = chunkfile.open_part(folder, part, index)
        if index is not None:
            for col in [None] if arr.ndim == 1 else range(arr.shape[1]):
                chunkfile.verify_column(arr, index, part, col)
        out[part] = np.array(arr, dtype=np.uint64)
    return out


def _read_keys(folder: Path) -> dict[str, list[str]]:
    """The clear keys of the chunk in ``folder`` (checked against the index)."""
    data = (folder / chunkfile.KEYS_FILE).read_bytes()
    index = chunkfile.read_index(folder)
    if index is not None:
        chunkfile.verify_keys(data, index)
    keys: dict[str, list[str]] = json.loads(data)
    return keys


def _clean_stale_uploads(folder: Path) -> None:
    """Remove uploads staged in ``folder`` and abandoned (older than a few hours)."""
    if not folder.is_dir():
        return
    now = time.time()
    for path in folder.glob(".upload-*"):
        try:
            if now - path.stat().st_mtime > _STALE_UPLOAD_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


class Catalog:
    """The requester's view of tables: ``HOME/tables/NAME.json`` manifests."""

    def __init__(self, home: Path) -> None:
        self.folder = Path(home) / "tables"

    def get(self, name: str) -> dict[str, Any]:
        """Manifest of ``name``; NotFoundError if not imported."""
        try:
            result: dict[str, Any] = json.loads(
                (self.folder / f"{check_table_name(name)}.json").read_text()
            )
        except FileNotFoundError:
            raise NotFoundError(
                f"no table {name!r} (import it with 'tessera table import')"
            ) from None
        return result

    def exists(self, name: str) -> bool:
        """Whether ``name`` is in the catalogue."""
        return (self.folder / f"{check_table_name(name)}.json").exists()

    def put(self, name: str, manifest: dict[str, Any]) -> None:
        """Write a manifest atomically."""
        _atomic_write(
            self.folder / f"{check_table_name(name)}.json", json.dumps(manifest, indent=1).encode()
        )

    def remove(self, name: str) -> bool:
        """Drop ``name`` from the catalogue (and its inferred schema); False if absent."""
        path = self.folder / f"{check_table_name(name)}.json"
        (self.folder / f"{name}.schema.yaml").unlink(missing_ok=True)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def names(self) -> list[str]:
        """Every table name."""
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.json"))

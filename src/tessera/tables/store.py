"""Shared tables at rest: a custodian's share files and the requester's catalogue.

A custodian keeps, under its store folder, ``tables/NAME/manifest.json`` (schema, chunks,
prime, its party index) and one ``CHUNK.npz`` per appended chunk holding its Shamir
shares (uint64, values in GF(p)) plus ``CHUNK.keys.json`` with the clear pseudonym
keys.  A chunk is what one hospital appended: its row count and origin are public.
The requester's catalogue (``HOME/tables/NAME.json``) has the same manifest without
shares.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.errors import InputError, NotFoundError

__all__ = ["Catalog", "ShareStore", "TableShares", "check_table_name", "pack_chunk", "unpack_chunk"]

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_CHUNK = re.compile(r"^[0-9a-f]{8,64}$")
U64Array = npt.NDArray[np.uint64]


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


def unpack_chunk(data: bytes) -> tuple[dict[str, U64Array], dict[str, list[str]]]:
    """Inverse of :func:`pack_chunk`; InputError if malformed."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            parts = {k[2:]: np.asarray(z[k], dtype=np.uint64) for k in z.files if k[:2] == "p:"}
            keys = json.loads(bytes(z["keys"]).decode()) if "keys" in z.files else {}
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise InputError(f"malformed table chunk ({exc.__class__.__name__})") from None
    return parts, keys


@dataclass
class TableShares:
    """A table's shares at one custodian, chunks concatenated in manifest order."""

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
        """Store one chunk's shares then the new manifest (which must list the chunk)."""
        if not _CHUNK.match(chunk_id):
            raise InputError("invalid chunk id")
        if not any(c.get("id") == chunk_id for c in manifest.get("chunks", [])):
            raise InputError("the manifest does not list this chunk")
        parts, _ = unpack_chunk(data)  # validate before storing anything
        rows = {int(v.shape[0]) for v in parts.values()}
        listed = next(c for c in manifest["chunks"] if c["id"] == chunk_id)
        if rows and rows != {int(listed["rows"])}:
            raise InputError("chunk row count does not match the manifest")
        folder = self._dir(name)
        _atomic_write(folder / f"{chunk_id}.npz", data)
        _atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1).encode())

    def load(
        self, name: str, wanted: set[str] | None = None, chunk_ids: list[str] | None = None
    ) -> TableShares:
        """Shares of table ``name``: only parts in ``wanted`` and chunks in ``chunk_ids``
        (in that order) when given; NotFoundError if a listed chunk is missing here."""
        manifest = self.manifest(name)
        folder = self._dir(name)
        chunks: list[dict[str, U64Array]] = []
        keys: dict[str, list[str]] = {}
        origins: list[str] = []
        by_id = {c["id"]: c for c in manifest["chunks"]}
        order = list(by_id) if chunk_ids is None else chunk_ids
        for cid in order:
            chunk = by_id.get(cid)
            path = folder / f"{cid}.npz"
            if chunk is None or not path.exists():
                raise NotFoundError(f"table {name}: chunk {cid[:12]} is missing at this custodian")
            parts, ks = unpack_chunk(path.read_bytes())
            if wanted is not None:
                parts = {k: v for k, v in parts.items() if k in wanted}
            chunks.append(parts)
            for k, v in ks.items():
                keys.setdefault(k, []).extend(v)
            origins.extend([str(chunk["hospital"])] * int(chunk["rows"]))
        merged = {k: np.concatenate([c[k] for c in chunks]) for k in (chunks[0] if chunks else {})}
        return TableShares(manifest, merged, keys, origins)


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

    def names(self) -> list[str]:
        """Every table name."""
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.json"))

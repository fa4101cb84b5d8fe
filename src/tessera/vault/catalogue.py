"""The secret-shared catalogue: one k-of-n shared, signed manifest per file version.

Each store lists ``catalog/``; an entry whose fragments are present on at least k stores
is combined (in memory: manifests are a few KiB), its signature checked, and parsed.
Entries with fewer than k readable fragments are invisible: either a put still under way
or one that crashed (the crash journal removes those).  No store ever holds a name.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, cast

from tessera.core.fragment import combine_stream, split_stream
from tessera.core.rng import RandomSource
from tessera.errors import TesseraError
from tessera.vault.manifest import Manifest, Verifier, decode, is_entry_id
from tessera.vault.store import Store
from tessera.vault.transfer import on_each

__all__ = ["Entry", "Listing", "combine_manifest", "read_entries", "scan", "share_manifest"]


@dataclass
class Listing:
    """Which stores hold a fragment of which catalogue entry."""

    entries: dict[str, set[int]]
    unreachable: dict[int, str]


@dataclass
class Entry:
    """One catalogue entry: its manifest, or why it cannot be read."""

    entry_id: str
    stores: set[int]
    manifest: Manifest | None
    problem: str | None = None


def scan(stores: Sequence[Store], *, timeout_s: float | None = None) -> Listing:
    """List ``catalog/`` on every store at once (a store silent ``timeout_s`` is unreachable)."""
    listed = on_each(stores, lambda s: s.list("catalog"), timeout_s=timeout_s)
    entries: dict[str, set[int]] = {}
    unreachable: dict[int, str] = {}
    for store, names in listed.items():
        if isinstance(names, TesseraError):
            unreachable[store.id] = str(names)
            continue
        for name in names:
            if is_entry_id(name):
                entries.setdefault(name, set()).add(store.id)
    return Listing(entries, unreachable)


def share_manifest(
    data: bytes, *, k: int, n: int, entry_id: str, rng: RandomSource | None = None
) -> list[bytes]:
    """The n catalogue fragments of a signed manifest (Shamir k-of-n)."""
    outs = [io.BytesIO() for _ in range(n)]
    split_stream(
        io.BytesIO(data),
        cast(list[BinaryIO], outs),
        k=k,
        size=len(data),
        scheme="shamir",
        rng=rng,
        object_id=bytes.fromhex(entry_id),
    )
    return [o.getvalue() for o in outs]


def combine_manifest(fragments: Sequence[bytes], verifier: Verifier) -> Manifest:
    """Combine catalogue fragments and check the manifest's signature."""
    out = io.BytesIO()
    combine_stream(cast(list[BinaryIO], [io.BytesIO(f) for f in fragments]), out)
    return decode(out.getvalue(), verifier)


def read_entries(
    stores: Sequence[Store],
    listing: Listing,
    verifier: Verifier,
    *,
    k_hint: int,
    cache: dict[str, Manifest] | None = None,
    timeout_s: float | None = None,
) -> list[Entry]:
    """Read and check every catalogue entry that at least ``k_hint`` stores hold.

    ``cache`` maps entry ids to manifests already read and checked (an entry never
    changes once written, so a cached one is not fetched again); new ones are added.
    """
    known = cache if cache is not None else {}
    by_id = {s.id: s for s in stores}
    wanted = [
        (entry_id, sid)
        for entry_id, holders in listing.entries.items()
        if len(holders) >= k_hint and entry_id not in known
        for sid in sorted(holders)
    ]
    fetched = on_each(
        wanted, lambda item: by_id[item[1]].read_bytes(f"catalog/{item[0]}"), timeout_s=timeout_s
    )
    blobs_of: dict[str, list[bytes]] = {}
    for (entry_id, _sid), blob in fetched.items():
        if isinstance(blob, bytes):
            blobs_of.setdefault(entry_id, []).append(blob)
    result: list[Entry] = []
    for entry_id, holders in sorted(listing.entries.items()):
        if len(holders) < k_hint:
            result.append(Entry(entry_id, holders, None, "fewer catalogue fragments than k"))
            continue
        if entry_id in known:
            result.append(Entry(entry_id, holders, known[entry_id]))
            continue
        try:
            manifest = combine_manifest(blobs_of.get(entry_id, []), verifier)
        except TesseraError as exc:
            result.append(Entry(entry_id, holders, None, str(exc)))
            continue
        if manifest.entry_id != entry_id:
            result.append(Entry(entry_id, holders, None, "manifest filed under a wrong id"))
            continue
        known[entry_id] = manifest
        result.append(Entry(entry_id, holders, manifest))
    return result

"""Key material made once per session (depth 1: N = 8192; depth 3: N = 16384), and a
small encrypted table with its secrets, for the HE unit tests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np
import pytest

from tessera.he import engine as he_engine
from tessera.he.datafiles import PublicData, SealedInfo
from tessera.he.files import Bundle
from tessera.he.packing import Stream
from tessera.he.params import params_for_depth
from tessera.he.session import encrypt_streams


@dataclass(frozen=True)
class Keys:
    bundle: Bundle
    public: he_engine.PublicEngine
    secret: he_engine.SecretEngine
    secret_context: bytes


def make_keys(depth: int) -> Keys:
    params = params_for_depth(depth)
    material = he_engine.keygen(params)
    bundle = Bundle(
        keyset=secrets.token_hex(16),
        name="test",
        owner="alice",
        engine="tenseal",
        params=params,
        wrap_public=bytes(1216),
        public_context=material.public_context,
        created="2026-01-01T00:00:00+00:00",
    )
    bundle = Bundle.from_bytes(bundle.to_bytes())
    public = he_engine.open_public("tenseal", params, material.public_context)
    secret = he_engine.open_secret("tenseal", params, material.secret_context)
    return Keys(bundle, public, secret, material.secret_context)


@pytest.fixture(scope="session")
def keys1() -> Keys:
    return make_keys(1)


@pytest.fixture(scope="session")
def keys3() -> Keys:
    return make_keys(3)


@dataclass(frozen=True)
class Table:
    keys: Keys
    values: np.ndarray
    streams: tuple[Stream, ...]
    data: PublicData
    info: SealedInfo


def encrypt_table(keys: Keys, values: np.ndarray, streams: tuple[Stream, ...]) -> Table:
    blobs, layout, sentinels = encrypt_streams(keys.public, values, streams)
    data = PublicData.create(
        kind="table",
        bundle=keys.bundle,
        streams=streams,
        chunks=layout.chunks,
        ciphertexts=blobs,
        created="2026-01-01T00:00:00+00:00",
    )
    return Table(keys, values, streams, data, SealedInfo(layout, sentinels))


def cohort(rows: int, columns: int, seed: int) -> tuple[np.ndarray, tuple[Stream, ...]]:
    """Rows of clinical-looking columns inside declared bounds."""
    rng = np.random.default_rng(seed)
    streams = tuple(Stream(f"c{j}", -10.0 * j, 50.0 + 40.0 * j) for j in range(columns))
    cols = []
    for s in streams:
        mid, spread = (s.lo + s.hi) / 2, (s.hi - s.lo) / 6
        cols.append(np.clip(rng.normal(mid + spread / 2, spread, rows), s.lo, s.hi))
    return np.stack(cols, 1), streams


@pytest.fixture(scope="session")
def table(keys1: Keys) -> Table:
    """6,000 rows x 4 columns: two chunks at 4,096 slots."""
    values, streams = cohort(6000, 4, seed=3)
    return encrypt_table(keys1, values, streams)

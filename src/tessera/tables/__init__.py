"""Typed schemas, comparison-sparing column encodings and secret-shared tables (L1)."""

from __future__ import annotations

from tessera.tables.encode import PRIME as PRIME
from tessera.tables.encode import Encoded as Encoded
from tessera.tables.encode import encode_rows as encode_rows
from tessera.tables.encode import parts_of as parts_of
from tessera.tables.encode import read_csv as read_csv
from tessera.tables.encode import share_parts as share_parts
from tessera.tables.schema import Column as Column
from tessera.tables.schema import Schema as Schema
from tessera.tables.schema import infer_schema as infer_schema
from tessera.tables.store import Catalog as Catalog
from tessera.tables.store import ShareStore as ShareStore

__all__ = [
    "PRIME",
    "Catalog",
    "Column",
    "Encoded",
    "Schema",
    "ShareStore",
    "encode_rows",
    "infer_schema",
    "parts_of",
    "read_csv",
    "share_parts",
]

"""A custodian removes or widens a table only when a steward signed it (#18)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera.errors import InputError, PolicyError
from tessera.keys import generate
from tessera.keys.documents import SignedDocument
from tessera.keys.people import Person, Roster
from tessera.tables.encode import PRIME, column_info, encode_rows, share_parts
from tessera.tables.schema import Column, Schema
from tessera.tables.store import ShareStore, pack_chunk
from tessera.workflows.table_admin import (
    TABLE_CHANGE_CONTEXT,
    admit_table_change,
    apply_table_change,
    widened_schema,
)

KEYS = {name: generate() for name in ("ann", "bob", "res")}
ROSTER = Roster(
    1,
    (
        Person("ann", frozenset({"steward"}), KEYS["ann"].verify_key),
        Person("bob", frozenset({"steward"}), KEYS["bob"].verify_key),
        Person("res", frozenset({"researcher"}), KEYS["res"].verify_key),
    ),
)
OLD = Schema((Column("age", "integer", 20, 40), Column("sex", "categorical", categories=("F",))))
NEW = Schema(
    (Column("age", "integer", 0, 120), Column("sex", "categorical", categories=("F", "M")))
)


def _store(tmp_path: Path) -> tuple[ShareStore, list[dict[str, Any]]]:
    """Party 0's store with two chunks of table ``t``; every party's shares."""
    store = ShareStore(tmp_path)
    manifest: dict[str, Any] = {
        "name": "t",
        "schema": OLD.to_dict(),
        "columns": [column_info(c) for c in OLD.columns],
        "chunks": [],
        "party": 0,
    }
    every = []
    for i, rows in enumerate(([(2, ["25", "F"]), (3, ["", "F"])], [(2, ["40", ""])])):
        encoded = encode_rows(OLD, ["age", "sex"], rows)
        shares = share_parts(encoded.parts, n=3, t=1)
        every.append(shares)
        chunk = f"{i:032x}"
        manifest = {
            **manifest,
            "chunks": [*manifest["chunks"], {"id": chunk, "hospital": "h", "rows": encoded.rows}],
        }
        store.append("t", manifest, chunk, pack_chunk(shares[0], {}))
    return store, every


def _doc(action: str, chunks: list[str], *signers: str, **extra: Any) -> SignedDocument:
    body = {
        "kind": "table-change",
        "version": 1,
        "action": action,
        "table": "t",
        "chunks": chunks,
        "schema": NEW.to_dict() if action == "alter" else None,
        "issued_at": time.time(),
        "nonce": "00",
        **extra,
    }
    doc = SignedDocument(body)
    for name in signers:
        doc = doc.signed_by(name, KEYS[name], context=TABLE_CHANGE_CONTEXT)
    return doc


def test_a_steward_removes_the_table(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    manifest = store.manifest("t")
    chunks = [c["id"] for c in manifest["chunks"]]
    body = admit_table_change(ROSTER, _doc("remove", chunks, "ann"), manifest, policy_steward=None)
    assert apply_table_change(store, body) == {"table": "t", "removed": True}
    assert store.tables() == []


@pytest.mark.parametrize(
    ("signers", "steward", "extra", "named"),
    [
        ((), None, {}, "needs a steward"),
        (("res",), None, {}, "needs a steward"),
        (("bob",), "ann", {}, "needs its steward 'ann'"),
        (("ann",), None, {"issued_at": time.time() - 3600}, "expired"),
        (("ann",), None, {"chunks": ["ff" * 16]}, "changed since"),
    ],
)
def test_refusals(
    tmp_path: Path, signers: tuple[str, ...], steward: str | None, extra: Any, named: str
) -> None:
    store, _ = _store(tmp_path)
    manifest = store.manifest("t")
    chunks = [c["id"] for c in manifest["chunks"]]
    document = _doc("remove", extra.pop("chunks", chunks), *signers, **extra)
    with pytest.raises(PolicyError, match=named):
        admit_table_change(ROSTER, document, manifest, policy_steward=steward)
    assert store.tables()  # nothing removed


def test_a_forged_body_is_refused(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    manifest = store.manifest("t")
    document = _doc("remove", [c["id"] for c in manifest["chunks"]], "ann")
    tampered = SignedDocument({**document.body, "table": "u"}, document.signatures)
    with pytest.raises(PolicyError, match="needs a steward"):
        admit_table_change(ROSTER, tampered, manifest, policy_steward=None)
    with pytest.raises(InputError, match="malformed"):
        admit_table_change(ROSTER, _doc("drop", [], "ann"), manifest, policy_steward=None)


def test_alter_reencodes_every_chunk_in_place(tmp_path: Path) -> None:
    store, every = _store(tmp_path)
    manifest = store.manifest("t")
    chunks = [c["id"] for c in manifest["chunks"]]
    body = admit_table_change(ROSTER, _doc("alter", chunks, "ann"), manifest, policy_steward="ann")
    apply_table_change(store, body)
    after = store.manifest("t")
    assert after["columns"] == [column_info(c) for c in NEW.columns] and after["party"] == 0
    loaded = store.load("t")
    assert loaded.parts["age.th"].shape == (3, 120)
    assert loaded.parts["sex.oh"].shape == (3, 2)
    # party 0's re-encoded shares equal the re-encoding of its original shares
    assert np.array_equal(loaded.parts["sex.oh"][:, 1], np.zeros(3, dtype=np.uint64))
    first = np.concatenate([s[0]["age.valid"] for s in every])
    assert np.array_equal(loaded.parts["age.th"][:, 19], first % PRIME)  # [age >= 20] = valid


def test_widened_schema_from_flags() -> None:
    new = widened_schema(OLD, bounds={"AGE": ("0", "120")}, categories={"sex": ["M"]})
    assert new == NEW
    with pytest.raises(InputError, match="no column 'weight'"):
        widened_schema(OLD, bounds={"weight": ("0", "1")})
    with pytest.raises(InputError, match="numeric"):
        widened_schema(OLD, bounds={"sex": ("0", "1")})

"""Files and specs: sealed key sets open only with their key, data files and sealed parts
are bound to their digests, jobs and models are parsed strictly."""

from __future__ import annotations

import secrets

import pytest

from tessera.errors import InputError, IntegrityError
from tessera.he.container import pack, unpack
from tessera.he.datafiles import DataFile, SealedInfo, open_sealed
from tessera.he.files import KeySecret, KeySetFile, unseal
from tessera.he.jobs import Job, Model

from .conftest import Keys, Table


def test_a_key_set_opens_only_with_its_key(keys1: Keys) -> None:
    kek = secrets.token_bytes(32)
    secret = KeySecret(keys1.secret_context, b"w" * 96, keys1.bundle.to_bytes())
    sealed = KeySetFile.create(keys1.bundle, secret, kek=kek, owner_key="abc").to_bytes()
    assert keys1.secret_context not in sealed  # sealed, never in the clear
    parsed = KeySetFile.from_bytes(sealed)
    assert parsed.open(kek) == secret
    with pytest.raises(IntegrityError):
        parsed.open(secrets.token_bytes(32))
    box = unpack(sealed, expect="tessera-he-keyset")
    relabelled = pack({**box.header, "owner": "mallory"}, list(box.blobs))
    with pytest.raises(IntegrityError):
        KeySetFile.from_bytes(relabelled).open(kek)  # the header is bound to the seal


def test_data_files_and_sealed_parts_are_bound_to_their_digests(keys1: Keys, table: Table) -> None:
    key = secrets.token_bytes(32)
    data = DataFile.create(table.data, keys1.bundle, table.info, data_key=key, wrapped_key=b"k")
    raw = data.to_bytes()
    again = DataFile.from_bytes(raw)
    info = open_sealed(again.nonce, again.sealed, key, again.data_digest, again.bundle_digest)
    assert info.layout == table.info.layout
    assert (info.sentinels == table.info.sentinels).all()
    box = unpack(raw, expect="tessera-he-data")
    public = bytearray(box.blobs[0])
    public[-10] ^= 1
    with pytest.raises(IntegrityError, match="altered"):
        DataFile.from_bytes(pack(box.header, [bytes(public), *box.blobs[1:]]))
    with pytest.raises(IntegrityError):  # the sealed part moved to other data
        open_sealed(again.nonce, again.sealed, key, "sha256:" + "0" * 64, again.bundle_digest)
    with pytest.raises(IntegrityError):
        unseal(again.nonce, again.sealed[:-1] + b"\0", key, b"", "x")
    assert SealedInfo.from_bytes(table.info.to_bytes()).layout == table.info.layout


def test_jobs_are_parsed_strictly() -> None:
    assert Job.from_dict({"kind": "variance", "columns": ["a", "b"]}).depth == 1
    assert Job.from_dict({"kind": "scores", "model": "m", "link": "polynomial"}).depth == 3
    assert Job.from_dict({"kind": "sum"}).digest != Job.from_dict({"kind": "mean"}).digest
    for bad, why in [
        ({"kind": "median"}, "job kind"),
        ({"kind": "sum", "model": "m"}, "belong to scores"),
        ({"kind": "scores"}, "names the model"),
        ({"kind": "scores", "model": "m", "link": "tanh"}, "link must be"),
        ({"kind": "sum", "columns": ["a", "a"]}, "each column once"),
        ({"kind": "sum", "extra": 1}, "unknown job field"),
        ({"kind": "scores", "model": "m", "model_digest": "md5:x"}, "model_digest"),
        ([], "mapping"),
    ]:
        with pytest.raises(InputError, match=why):
            Job.from_dict(bad)


def test_models_are_parsed_strictly() -> None:
    doc = Model("m", "logistic", ("a",), (0.5,), -1.0).to_dict()
    assert Model.from_dict(doc).digest == Model.from_dict(dict(doc)).digest
    with pytest.raises(InputError, match="linear: its scores take no sigmoid"):
        Job("scores", model="m", link="sigmoid").link_for(
            Model.from_dict({**doc, "kind": "linear"})
        )
    for change in (
        {"weights": [0.5, 1.0]},
        {"weights": [float("nan")]},
        {"kind": "forest"},
        {"format": "x"},
        {"features": ["a", "a"], "weights": [1, 2]},
        {"secret": 1},
        {"intercept": True},
    ):
        with pytest.raises(InputError):
            Model.from_dict({**doc, **change})

"""Write the seed corpora, ``fuzz/corpus/<target>/``: small valid and near-valid inputs.

Run from the repository root: ``.venv/bin/python -m fuzz.make_corpus``.  Keys, random
sources and clocks are fixed, but ML-DSA signatures are randomised, so the signed seeds
(manifest, catalogue, node_job, audit_line) come out different on every run: rerun it
when a format changes, not as a build step.  Seed files are ``seed-<sha1>``; files added
by hand are kept: reproducers of fixed bugs (``crash-*``) and of bugs reported to the
owners of the code (``known-*``, see ``fuzz/harness.py``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO, cast

import numpy as np

from fuzz.harness import CORPUS, join_parts

Seeds = Iterable[bytes]

_SEED = bytes(range(32))


def _rng() -> Any:
    from tessera.core.rng import Drbg

    return Drbg.from_seed(_SEED)


def _fragment_set(data: bytes, k: int, n: int, scheme: str) -> list[bytes]:
    from tessera.core.fragment import split_stream

    outs = [io.BytesIO() for _ in range(n)]
    split_stream(
        io.BytesIO(data),
        cast(list[BinaryIO], outs),
        k=k,
        size=len(data),
        scheme=scheme,
        rng=_rng(),
        block_size=2048,
        workers=1,
    )
    return [o.getvalue() for o in outs]


def fragment_header() -> Seeds:
    shamir = _fragment_set(b"hello", 2, 3, "shamir")[0]
    ssms = _fragment_set(b"hello", 3, 5, "ssms")[2]
    yield shamir[:128]
    yield ssms[:128]
    yield shamir[:64]
    yield shamir[:8] + b"\x01" + shamir[9:128]
    yield b"TSSRFRAX" + shamir[8:128]


def fragments() -> Seeds:
    two_of_three = _fragment_set(b"The quick brown fox", 2, 3, "shamir")
    yield join_parts(two_of_three)
    yield join_parts(two_of_three[:2])
    yield join_parts(_fragment_set(b"x" * 3000, 2, 3, "ssms"))
    damaged = bytearray(two_of_three[1])
    damaged[200] ^= 0xFF
    yield join_parts([two_of_three[0], bytes(damaged), two_of_three[2]])


def _manifest_bytes(name: str = "scan.dcm") -> bytes:
    from tessera.keys.signing import SigningKey
    from tessera.vault.manifest import Manifest, encode

    manifest = Manifest(
        name=name,
        size=1234,
        created="2026-01-02T03:04:05Z",
        created_ns=1767323045000000000,
        object_id="00" * 16,
        generation=0,
        scheme="shamir",
        k=2,
        n=3,
        entry_id="11" * 16,
        key_id="ab" * 8,
    )
    return encode(manifest, SigningKey(_SEED))


def manifest() -> Seeds:
    data = _manifest_bytes()
    yield data
    yield data[:40]
    yield data.replace(b'"k":2', b'"k":"2"')
    yield data.replace(b'"name"', b'"nome"')
    yield b"TSMF\x01\x00\x00\x00\x02[]\x00\x00"


def catalogue() -> Seeds:
    from tessera.vault.catalogue import share_manifest

    data = _manifest_bytes()
    parts = share_manifest(data, k=2, n=3, entry_id="11" * 16, rng=_rng())
    yield join_parts(parts)
    yield join_parts(parts[1:])
    small = share_manifest(
        b"TSMF\x01\x00\x00\x00\x02{}\x00\x00", k=2, n=2, entry_id="22" * 16, rng=_rng()
    )
    yield join_parts(small)


def schema_yaml() -> Seeds:
    yield (
        b"columns:\n"
        b"- {name: pid, type: pseudonym, nullable: false}\n"
        b"- {name: age, type: integer, min: 18, max: 100}\n"
        b"- {name: bmi, type: decimal, min: '12.0', max: '60.0', scale: 1}\n"
        b"- {name: sex, type: categorical, categories: [F, M]}\n"
        b"- {name: smoker, type: boolean}\n"
        b"- {name: visit, type: date, min: '2010-01-01', max: '2025-12-31'}\n"
    )
    yield b"columns:\n- name: age\n  type: integer\n  min: 5\n  max: 3\n"
    yield b"columns: [{name: x, type: decimal, min: 1e999, max: 2, scale: 9}]\n"
    yield b"columns: {name: age}\n"
    yield b"- [a, b\n"


def csv_table() -> Seeds:
    yield (
        b"pid,age,bmi,sex,smoker,visit\n"
        b"p1,34,22.5,F,true,2020-01-03\n"
        b"p2,61,31.0,M,no,2021-06-30\n"
        b"p3,,NA,F,,2019-12-31\n"
    )
    yield b"\xef\xbb\xbfpid,age\np1,40\np2,abc\np3,41,42\n"
    yield b"pid,score\n" + b"".join(b"p%d,%d.%d\n" % (i, i * 7, i % 10) for i in range(20))
    yield b'a,"b\nc",d\n1,2\n'
    yield b""


SQL_QUERIES = (
    "SELECT COUNT(*) FROM t WHERE age > 60",
    "SELECT sex, COUNT(*), AVG(bmi), MIN(visit), MAX(age) FROM t WHERE smoker "
    "AND visit BETWEEN '2015-01-01' AND '2020-12-31' GROUP BY sex HAVING COUNT(*) > 5 "
    "ORDER BY 2 DESC LIMIT 3",
    "SELECT hospital, STDDEV(load), VAR_POP(age) FROM t WHERE age IN (20, 30, 40) "
    "OR bmi IS NULL GROUP BY hospital",
    "SELECT COUNT(t.age), SUM(u.load) FROM t AS a JOIN u AS b ON a.pid = b.pid",
    "SELECT COUNT(*) FROM t JOIN u ON t.pid = u.pid WHERE NOT (t.sex = 'F' OR u.age < 30)",
    "SELECT smoker, SUM(bmi) FROM t GROUP BY smoker ORDER BY SUM(bmi) / COUNT(*)",
    "SELECT * FROM t",
    "SELECT COUNT(*) FROM (SELECT 1)",
    "SELECT COUNT(*) FROM t WHERE bmi > 1e400 AND visit < '99999-01-01'",
    "DROP TABLE t",
)


def sql() -> Seeds:
    for q in SQL_QUERIES:
        yield q.encode()


def plan_json() -> Seeds:
    from fuzz.sql import TABLES
    from tessera.errors import TesseraError
    from tessera.mpc.sql import compile_sql

    for q in SQL_QUERIES:
        try:
            plan = compile_sql(q, TABLES)
        except TesseraError:
            continue
        yield json.dumps(plan.to_dict(), separators=(",", ":")).encode()
    yield b'{"version": 1}'
    yield b'{"version": 2, "sources": []}'


def _job() -> dict[str, Any]:
    from fuzz.sql import TABLES
    from tessera.mpc.sql import compile_sql

    plan = compile_sql("SELECT sex, COUNT(*) FROM t GROUP BY sex", TABLES)
    return {
        "version": 1,
        "type": "sql",
        "job_id": "0f" * 16,
        "requester": "rita",
        "issued_at": 1767323045,
        "parties": [["127.0.0.1", 9001], ["127.0.0.1", 9002], ["127.0.0.1", 9003]],
        "inputs": [{"alias": "t", "table": "t", "parts": ["sex.oh", "sex.valid"]}],
        "noise": None,
        "params": {"plan": plan.to_dict(), "prime": 2**61 - 1},
    }


def node_job() -> Seeds:
    from tessera.keys.documents import SignedDocument
    from tessera.keys.signing import SigningKey
    from tessera.workflows.custodian import JOB_CONTEXT

    job = _job()
    doc = SignedDocument(job).signed_by("rita", SigningKey(_SEED), context=JOB_CONTEXT)
    signed = doc.to_dict()
    yield json.dumps({"job": signed["body"], "signatures": signed["signatures"]}).encode()
    yield json.dumps(signed).encode()
    yield json.dumps({"job": {**job, "issued_at": 1e400}, "signatures": []}).encode()
    sig = dict(signed["signatures"][0], signature="zz")
    yield json.dumps({"job": job, "signatures": [sig]}).encode()


def node_chunk() -> Seeds:
    from fuzz.node_chunk import CHUNK_ID
    from tessera.tables.store import pack_chunk

    rows = 3
    manifest = {"name": "cohort", "party": 0, "chunks": [{"id": CHUNK_ID, "rows": rows}]}
    header = base64.urlsafe_b64encode(json.dumps(manifest).encode())
    parts = {
        "age.valid": np.ones(rows, dtype=np.uint64),
        "age.th": np.zeros((rows, 4), dtype=np.uint64),
    }
    body = pack_chunk(parts, {"pid": ["a1", "b2", "c3"]})
    yield header + b"\n" + body
    yield header + b"\n" + body[: len(body) // 2]
    other = base64.urlsafe_b64encode(json.dumps({**manifest, "party": "0"}).encode())
    yield other + b"\n" + body
    yield b"e30=\n" + body


def result() -> Seeds:
    from fuzz.result import PLANS
    from tessera.mpc.result import result_size

    for j, plan in enumerate(PLANS):
        size = result_size(plan)
        shares = [1 if i < plan.cells else 7 + i for i in range(size)]
        yield bytes([j]) + json.dumps({"party": 0, "shares": shares}).encode()
        yield bytes([j]) + json.dumps({"party": 0, "shares": shares[:-1]}).encode()
    yield b"\x01" + json.dumps({"party": 0, "shares": [1] * 3 + [-(2**60)] * 30}).encode()


def _dicom_file(private: bool, sequence: bool) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, ExplicitVRLittleEndian

    ct = "1.2.840.10008.5.1.4.1.1.2"
    ds = Dataset()
    ds.SOPClassUID = ct
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1001"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1002"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1003"
    ds.PatientID = "PID-4711"
    ds.PatientName = "Doe^Jane"
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20200315"
    ds.Modality = "CT"
    ds.InstitutionName = "St Elsewhere"
    if sequence:
        item = Dataset()
        item.CodeValue = "T-A0100"
        item.CodeMeaning = "Brain of Doe^Jane"
        ds.AnatomicRegionSequence = Sequence([item])
    if private:
        block = ds.private_block(0x0009, "ACME 1.1", create=True)
        block.add_new(0x01, "LO", "secret note")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ct)
    meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dicom() -> Seeds:
    plain = _dicom_file(False, False)
    yield b"\x00" + plain
    yield b"\x05" + _dicom_file(True, True)
    yield b"\x80" + plain[128:]
    yield b"\x00" + plain[: len(plain) - 20]


def audit_line() -> Seeds:
    from fuzz.audit_line import SEP, base_input

    data = base_input()
    yield data
    records, heads, meta = data.split(SEP)
    yield records
    yield SEP.join([records.replace(b'"login"', b'"logout"'), heads, meta])
    yield SEP.join([b"000000000000 {}\n000000000001 []\n", heads, meta])
    yield SEP.join([records, b'{"size": 1}\n', meta])


def stix() -> Seeds:
    from datetime import UTC, datetime

    from tessera.monitor import Alert, to_stix

    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    alerts = [
        Alert("brute-force", "high", (1, 2), "many failed logins", t0, t0, {"address": "10.0.0.9"}),
    ]
    bundle = to_stix(alerts)
    yield json.dumps(bundle).encode()
    yield json.dumps({"type": "bundle", "id": "bundle--x", "objects": [{"type": "x"}]}).encode()
    yield b'{"type": "bundle", "objects": []}'


TARGETS: dict[str, Callable[[], Seeds]] = {
    "fragment_header": fragment_header,
    "fragments": fragments,
    "manifest": manifest,
    "catalogue": catalogue,
    "schema_yaml": schema_yaml,
    "csv_table": csv_table,
    "sql": sql,
    "plan_json": plan_json,
    "node_job": node_job,
    "node_chunk": node_chunk,
    "result": result,
    "dicom": dicom,
    "audit_line": audit_line,
    "stix": stix,
}


def write(target: str, seeds: Seeds) -> int:
    """Write ``seeds`` as ``seed-<sha1 prefix>`` files; replace older seed files."""
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*"):
        old.unlink()
    count = 0
    for data in seeds:
        digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()[:16]
        (folder / f"seed-{digest}").write_bytes(data)
        count += 1
    return count


def main() -> None:
    for target, make in TARGETS.items():
        print(f"{target}: {write(target, make())} seeds")


if __name__ == "__main__":
    main()

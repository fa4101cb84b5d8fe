"""Homomorphic encryption use cases: key sets, encrypting a table, decrypting a result.

Key sets live in ``HOME/he/``: ``NAME.hekey`` (the secret context and the wrapping key,
sealed with AES-256-GCM under a key derived with HKDF-SHA256 from the owner's own
ML-DSA-65 key, which their passphrase unlocks: never stored in the clear) and
``NAME.hebundle`` (the public bundle: public and relinearisation keys, parameters, no
secret; its SHA-256 is bound into every data file, answer and result made under it).

The same from Python::

    from tessera.workflows import he, he_run
    made = he.keygen(env, signer, depth=1)                    # signer: the owner, unlocked
    he.encrypt_csv(Path("cohort.csv"), he.find_bundle(env, "alice"), Path("cohort.hedata"),
                   schema=schema)
    he_run.run_job("http://127.0.0.1:8473/", job, Path("cohort.hedata"), Path("r.heresult"))
    doc = he.decrypt_result(env, signer, Path("r.heresult")).document
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tessera.config import Environment
from tessera.errors import ConfigError, InputError, IntegrityError, NotFoundError, PolicyError
from tessera.he import engine as he_engine
from tessera.he.answers import Answer as HEAnswer
from tessera.he.answers import ResultFile
from tessera.he.datafiles import DataFile, PublicData, SealedInfo, open_sealed
from tessera.he.files import Bundle, KeySecret, KeySetFile
from tessera.he.packing import Stream
from tessera.he.params import params_for_depth
from tessera.he.session import Opened, encrypt_streams, open_answer
from tessera.keys.people import valid_name
from tessera.keys.wrapping import WrapPrivateKey, WrapPublicKey, unwrap, wrap
from tessera.tables.encode import csv_reader
from tessera.tables.schema import Column, Schema, parse_value
from tessera.tables.store import Catalog
from tessera.workflows.people import Signer

__all__ = [
    "DecryptedResult",
    "EncryptSummary",
    "KeyGenResult",
    "bundle_path",
    "decrypt_result",
    "encrypt_csv",
    "encrypt_values",
    "find_bundle",
    "find_keyset",
    "keygen",
    "keyset_path",
    "table_schema",
    "unlock_keyset",
    "write_atomic",
]

KEYSET_SUFFIX, BUNDLE_SUFFIX = ".hekey", ".hebundle"
_KDF_INFO = b"tessera-he-keyset-v1|"
_WRAP_CONTEXT = b"tessera-he-data-key|"
_NUMERIC = ("integer", "decimal", "boolean")


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, force: bool = True) -> None:
    """Write ``data`` to ``path`` under a temporary name, then rename (never half a file)."""
    if not force and path.exists():
        raise ConfigError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- key sets ----------------------------------------------------------------------------
def keyset_path(env: Environment, name: str) -> Path:
    """``HOME/he/NAME.hekey``."""
    return env.home / "he" / f"{valid_name(name)}{KEYSET_SUFFIX}"


def bundle_path(env: Environment, name: str) -> Path:
    """``HOME/he/NAME.hebundle``."""
    return env.home / "he" / f"{valid_name(name)}{BUNDLE_SUFFIX}"


def _kek(signer: Signer, keyset: str) -> bytes:
    """The key sealing a key set: HKDF-SHA256 of the owner's ML-DSA-65 seed."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO + keyset.encode())
    return hkdf.derive(signer.key.seed_bytes())


@dataclass(frozen=True)
class KeyGenResult:
    """A new key set: where it is and what it is."""

    bundle: Bundle
    keyset_path: Path
    bundle_path: Path
    keyset_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            **self.bundle.describe(),
            "keyset_file": str(self.keyset_path),
            "bundle_file": str(self.bundle_path),
            "keyset_bytes": self.keyset_bytes,
        }


def keygen(
    env: Environment,
    signer: Signer,
    *,
    name: str | None = None,
    depth: int = 1,
    engine: str = he_engine.DEFAULT_ENGINE,
) -> KeyGenResult:
    """A new key set owned by ``signer``: its secret sealed under their key, its bundle
    public.  Refuses to replace an existing key set of that name."""
    name = valid_name(name or signer.name)
    secret_path, public_path = keyset_path(env, name), bundle_path(env, name)
    if secret_path.exists():
        raise ConfigError(f"{secret_path} already exists; refusing to replace key set {name}")
    params = params_for_depth(depth)
    material = he_engine.keygen(params, engine=engine)
    wrapping = WrapPrivateKey.generate()
    bundle = Bundle(
        keyset=secrets.token_hex(16),
        name=name,
        owner=signer.name,
        engine=engine,
        params=params,
        wrap_public=wrapping.public_key.to_bytes(),
        public_context=material.public_context,
        created=_now(),
    )
    raw_bundle = bundle.to_bytes()
    secret = KeySecret(material.secret_context, wrapping.to_bytes(), raw_bundle)
    sealed = KeySetFile.create(
        bundle, secret, kek=_kek(signer, bundle.keyset), owner_key=signer.key.key_id
    ).to_bytes()
    write_atomic(secret_path, sealed, mode=0o600, force=False)
    write_atomic(public_path, raw_bundle)
    return KeyGenResult(Bundle.from_bytes(raw_bundle), secret_path, public_path, len(sealed))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"no {what} at {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a {what}") from None


def find_bundle(env: Environment | None, key: str) -> Bundle:
    """The bundle named ``key``: a key set name in ``HOME/he`` or a bundle file's path."""
    path = Path(key)
    if path.suffix == BUNDLE_SUFFIX or os.sep in key:
        return Bundle.from_bytes(_read(path, "key bundle"), what=str(path))
    if path.suffix == KEYSET_SUFFIX:
        raise InputError(f"{key} is a key set: encrypt with its public bundle (.hebundle)")
    if env is None:
        raise NotFoundError(f"no key bundle {key!r} (give a .hebundle file or --home)")
    found = bundle_path(env, key)
    return Bundle.from_bytes(_read(found, "key bundle"), what=str(found))


def find_keyset(env: Environment, key: str | None, bundle_digest: str) -> tuple[Path, KeySetFile]:
    """The key set whose bundle has ``bundle_digest``: ``key`` (a name or a .hekey path)
    or, without it, the one in ``HOME/he`` that matches.  A key set of another bundle is
    refused by name."""
    if key is not None:
        path = (
            Path(key) if (key.endswith(KEYSET_SUFFIX) or os.sep in key) else keyset_path(env, key)
        )
        keyset = KeySetFile.from_bytes(_read(path, "key set"), what=str(path))
        if keyset.bundle_digest != bundle_digest:
            raise IntegrityError(
                f"key set {keyset.name} ({keyset.bundle_digest[:19]}…) is not the key this was "
                f"encrypted under ({bundle_digest[:19]}…)"
            )
        return path, keyset
    folder = env.home / "he"
    for path in sorted(folder.glob(f"*{KEYSET_SUFFIX}")) if folder.is_dir() else []:
        try:
            keyset = KeySetFile.from_bytes(path.read_bytes(), what=str(path))
        except (InputError, OSError):
            continue
        if keyset.bundle_digest == bundle_digest:
            return path, keyset
    raise NotFoundError(
        f"no key set in {folder} matches key bundle {bundle_digest[:19]}… (give --key)"
    )


def unlock_keyset(keyset: KeySetFile, signer: Signer) -> KeySecret:
    """The secrets of ``keyset``, opened with its owner's key (``signer``)."""
    if signer.name != keyset.owner:
        raise PolicyError(
            f"key set {keyset.name} belongs to {keyset.owner}; only their key opens it "
            f"(--as {keyset.owner})"
        )
    try:
        return keyset.open(_kek(signer, keyset.keyset))
    except IntegrityError:
        raise IntegrityError(
            f"key set {keyset.name} does not open with {signer.name}'s key: the file is "
            "damaged, or their key changed (restore it: tessera he key restore)"
        ) from None


# -- encrypting ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EncryptSummary:
    """What ``tessera he encrypt`` made."""

    out: Path
    rows: int
    columns: list[str]
    skipped: int
    chunks: int
    sentinels: int
    ciphertext_bytes: int
    bundle_digest: str
    data_digest: str
    table: str | None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (no secret: sentinel positions and values stay sealed)."""
        return {
            "out": str(self.out),
            "rows": self.rows,
            "columns": self.columns,
            "skipped_rows": self.skipped,
            "chunks": self.chunks,
            "sentinel_positions": self.sentinels,
            "bytes": self.ciphertext_bytes,
            "bundle_digest": self.bundle_digest,
            "data_digest": self.data_digest,
            "table": self.table,
        }


def table_schema(env: Environment, table: str) -> Schema:
    """The schema of ``table`` in the environment's catalogue (its bounds are public)."""
    return Schema.from_dict(Catalog(env.home).get(table)["schema"])


def _stream(col: Column) -> Stream:
    if col.kind == "boolean":
        return Stream(col.name, 0.0, 1.0)
    factor = 10.0**col.scale
    return Stream(col.name, col.min / factor, col.max / factor)


def _unit_info(col: Column) -> dict[str, Any]:
    lo, hi = (0, 1) if col.kind == "boolean" else (col.min, col.max)
    return {
        "name": col.name,
        "kind": col.kind,
        "scale": 10**col.scale,
        "lo_units": lo,
        "hi_units": hi,
        "nullable": col.nullable,
    }


def _choose(schema: Schema, columns: list[str] | None) -> list[Column]:
    if columns:
        chosen = [schema.column(c) for c in columns]
        bad = [c.name for c in chosen if c.kind not in _NUMERIC]
        if bad:
            raise InputError(
                f"column {bad[0]} is {schema.column(bad[0]).kind}: only integer, decimal and "
                "boolean columns are encrypted"
            )
        return chosen
    chosen = [c for c in schema.columns if c.kind in _NUMERIC]
    if not chosen:
        raise InputError("the schema has no integer, decimal or boolean column to encrypt")
    return chosen


def _read_csv(
    path: Path, chosen: list[Column], id_column: str | None, skip_incomplete: bool
) -> tuple[np.ndarray, list[str] | None, int]:
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise NotFoundError(f"no CSV file at {path}") from None
    with handle:
        reader = csv_reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"{path} is empty") from None
        except (csv.Error, UnicodeDecodeError):
            raise InputError(f"{path} is not a UTF-8 CSV file") from None
        lower = [h.strip().lower() for h in header]
        where = []
        for col in chosen:
            if col.name.lower() not in lower:
                raise InputError(f"{path} has no column {col.name!r}")
            where.append(lower.index(col.name.lower()))
        id_at = None
        if id_column is not None:
            if id_column.lower() not in lower:
                raise InputError(f"{path} has no column {id_column!r} (--id-column)")
            id_at = lower.index(id_column.lower())
        rows: list[list[float]] = []
        ids: list[str] = []
        skipped = 0
        try:
            for line, row in enumerate(reader, start=2):
                values = []
                for col, j in zip(chosen, where, strict=True):
                    try:
                        units = parse_value(col, row[j] if j < len(row) else "")
                    except ValueError as exc:
                        raise InputError(f"{path} line {line}, column {col.name}: {exc}") from None
                    if units is None:
                        break
                    values.append(units / 10.0**col.scale)
                if len(values) < len(chosen):
                    if not skip_incomplete:
                        raise InputError(
                            f"{path} line {line}: column {chosen[len(values)].name} is empty "
                            "(--skip-incomplete leaves such rows out)"
                        )
                    skipped += 1
                    continue
                rows.append(values)
                if id_at is not None:
                    ids.append(row[id_at].strip() if id_at < len(row) else "")
        except (csv.Error, UnicodeDecodeError):
            raise InputError(f"{path} is not a well-formed UTF-8 CSV file") from None
    if not rows:
        raise InputError(f"{path} has no complete rows to encrypt")
    return np.asarray(rows, dtype=np.float64), (ids if id_at is not None else None), skipped


def encrypt_values(
    values: np.ndarray,
    streams: list[Stream],
    bundle: Bundle,
    out: Path,
    *,
    kind: str = "table",
    table: str | None = None,
    units: list[dict[str, Any]] | None = None,
    ids: list[str] | None = None,
    source: str = "",
    voxel_mm3: float | None = None,
) -> tuple[DataFile, PublicData, SealedInfo]:
    """Encrypt ``values`` (rows x streams) under ``bundle`` into the data file ``out``."""
    engine = he_engine.open_public(bundle.engine, bundle.params, bundle.public_context)
    blobs, layout, sentinels = encrypt_streams(engine, values, streams)
    public = PublicData.create(
        kind=kind,
        bundle=bundle,
        streams=tuple(streams),
        chunks=layout.chunks,
        ciphertexts=blobs,
        created=_now(),
        voxel_mm3=voxel_mm3,
    )
    info = SealedInfo(layout, sentinels, units, table, ids, source)
    data_key = secrets.token_bytes(32)
    wrapped = wrap(
        WrapPublicKey.from_bytes(bundle.wrap_public),
        data_key,
        context=_WRAP_CONTEXT + public.digest.encode(),
    )
    data = DataFile.create(public, bundle, info, data_key=data_key, wrapped_key=wrapped)
    write_atomic(out, data.to_bytes())
    return data, public, info


def encrypt_csv(
    csv_path: Path,
    bundle: Bundle,
    out: Path,
    *,
    schema: Schema,
    table: str | None = None,
    columns: list[str] | None = None,
    id_column: str | None = None,
    skip_incomplete: bool = False,
) -> EncryptSummary:
    """Encrypt the numeric columns of a CSV, scaled by the schema's bounds."""
    chosen = _choose(schema, columns)
    values, ids, skipped = _read_csv(csv_path, chosen, id_column, skip_incomplete)
    streams = [_stream(c) for c in chosen]
    _, public, info = encrypt_values(
        values,
        streams,
        bundle,
        out,
        table=table,
        units=[_unit_info(c) for c in chosen],
        ids=ids,
        source=csv_path.name,
    )
    return EncryptSummary(
        out=out,
        rows=info.layout.rows,
        columns=[s.name for s in streams],
        skipped=skipped,
        chunks=info.layout.chunks,
        sentinels=len(info.layout.sentinels),
        ciphertext_bytes=len(public.raw),
        bundle_digest=bundle.digest,
        data_digest=public.digest,
        table=table,
    )


# -- decrypting ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DecryptedResult:
    """A checked result: the document, what it was checked with, and the sealed info."""

    opened: Opened
    result: ResultFile
    info: SealedInfo
    keyset: str

    @property
    def document(self) -> dict[str, Any]:
        """The result document with the checks and the job's provenance."""
        head = self.result.header
        return {
            **self.opened.document,
            "verification": self.opened.verdict.to_dict(),
            "sentinel_positions": len(self.info.layout.sentinels),
            "slots": self.info.layout.slots,
            "job_digest": head["job_digest"],
            "data_digest": head["data_digest"],
            "bundle_digest": head["bundle_digest"],
            "keyset": self.keyset,
            "server": head.get("server"),
            "table": self.info.table,
        }


def read_result(path: Path) -> ResultFile:
    """Parse a result file."""
    return ResultFile.from_bytes(_read(path, "result file"), what=str(path))


def decrypt_result(
    env: Environment, signer: Signer, path: Path, *, key: str | None = None
) -> DecryptedResult:
    """Open, decrypt and check ``path`` with the owner's key set (IntegrityError, one
    line, when anything does not hold)."""
    result = read_result(path)
    _, keyset = find_keyset(env, key, str(result.header["bundle_digest"]))
    return decrypt_with(result, unlock_keyset(keyset, signer), keyset.name)


def decrypt_with(result: ResultFile, secret: KeySecret, keyset_name: str = "") -> DecryptedResult:
    """Decrypt and check ``result`` with an opened key set."""
    bundle = Bundle.from_bytes(secret.bundle)
    head = result.header
    if bundle.digest != head["bundle_digest"]:
        raise IntegrityError("the result was made under another key bundle")
    data_header = head["data"]
    try:
        data_key = unwrap(
            WrapPrivateKey.from_bytes(secret.wrap_private),
            DataFile(data_header, b"", b"", b"").wrapped_key,
            context=_WRAP_CONTEXT + str(head["data_digest"]).encode(),
        )
    except (IntegrityError, ValueError):
        raise IntegrityError(
            "the result's data key does not open with this key set (another key, or altered)"
        ) from None
    info = open_sealed(
        DataFile(data_header, b"", b"", b"").nonce,
        result.sealed,
        data_key,
        str(head["data_digest"]),
        str(head["bundle_digest"]),
    )
    engine = he_engine.open_secret(bundle.engine, bundle.params, secret.secret_context)
    answer = HEAnswer.from_bytes(result.answer)
    opened = open_answer(
        engine,
        answer,
        job=result.job,
        model=result.model,
        data_digest=str(head["data_digest"]),
        bundle_digest=str(head["bundle_digest"]),
        public=head["public"],
        info=info,
    )
    return DecryptedResult(opened, result, info, keyset_name)

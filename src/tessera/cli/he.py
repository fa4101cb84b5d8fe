"""``tessera he``: homomorphic encryption for analyses on a server nobody trusts.

The owner makes a key set (``keygen``: the secret sealed under their own key), encrypts
a table or a CT series with its public bundle (``encrypt``), has an untrusted server
(``serve``, its own process) compute on the ciphertexts (``run``), and decrypts the
answer after checking it against hidden sentinel rows (``decrypt``), optionally releasing
aggregates under the table's DP policy (``--release``).  See docs/he.md.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tessera.cli._common import HomeOption, JsonOption, emit_json, human, resolve_home
from tessera.cli._keys import AsOption, acting_name, unlock_person
from tessera.config import Environment
from tessera.errors import UsageError
from tessera.tables.schema import Schema
from tessera.workflows.audit_cli import add_detail

__all__ = ["app"]

app = typer.Typer(
    help="Homomorphic encryption (CKKS): analyses and imaging on an untrusted server.",
    no_args_is_help=True,
)
key_app = typer.Typer(
    help="Key sets: show, export, back up in the vault, restore.", no_args_is_help=True
)
app.add_typer(key_app, name="key")

KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        help="Key set name in HOME/he, or a .hebundle / .hekey file (default: the one that "
        "matches).",
        show_default=False,
    ),
]
NameArg = Annotated[str, typer.Argument(help="Key set name (in HOME/he).")]


def _env(home: Path | None) -> Environment:
    return Environment.load(resolve_home(home))


@app.command("keygen")
def keygen(
    name: Annotated[
        str | None, typer.Option("--name", help="Key set name (default: your name).")
    ] = None,
    depth: Annotated[
        int,
        typer.Option(
            "--depth",
            min=0,
            help="Multiplicative depth the key set must evaluate: 1 for statistics, scores "
            "and imaging, 3 for the server-side polynomial sigmoid.",
        ),
    ] = 1,
    acting: AsOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Make a CKKS key set: the secret key sealed under your own key, the public bundle
    beside it (HOME/he/NAME.hekey and NAME.hebundle)."""
    from tessera.workflows.he import keygen as make

    env = _env(home)
    signer = unlock_person(env, acting_name(env, acting))
    made = make(env, signer, name=name, depth=depth)
    if json_out:
        emit_json(made.to_dict())
        return
    bundle = made.bundle
    typer.echo(f"key set {bundle.name} of {bundle.owner}: {bundle.params.describe()}")
    typer.echo(f"secret (sealed under {bundle.owner}'s key): {made.keyset_path}")
    typer.echo(
        f"public bundle ({len(bundle.to_bytes())} bytes, {bundle.digest}): {made.bundle_path}"
    )


@key_app.command("show")
def key_show(
    name: Annotated[str | None, typer.Argument(help="Key set name (default: all).")] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """The key sets in HOME/he: owner, parameters, bundle digest (nothing secret)."""
    from tessera.workflows.he import find_bundle

    env = _env(home)
    folder = env.home / "he"
    names = [name] if name else sorted(p.stem for p in folder.glob("*.hebundle"))
    docs = [find_bundle(env, n).describe() for n in names]
    if json_out:
        emit_json(docs)
        return
    for doc in docs:
        typer.echo(
            f"{doc['name']:<16} owner {doc['owner']:<12} N={doc['params']['poly_modulus_degree']} "
            f"depth {doc['params']['depth']}  {doc['bundle_digest']}"
        )


@key_app.command("export")
def key_export(
    name: NameArg,
    out: Annotated[Path, typer.Option("--out", help="Where to write the public bundle.")],
    home: HomeOption = None,
) -> None:
    """Write the public bundle of NAME (no secret: give it to whoever encrypts or computes)."""
    from tessera.workflows.he import find_bundle, write_atomic

    bundle = find_bundle(_env(home), name)
    write_atomic(out, bundle.to_bytes())
    typer.echo(f"wrote {out} ({bundle.digest})")


@key_app.command("backup")
def key_backup(
    name: NameArg,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Keep key set NAME in the vault as k-of-n fragments (still sealed under its owner's
    key); the vault owner's key signs the put."""
    from tessera.workflows.he_keys import backup_keyset
    from tessera.workflows.vault import vault_owner

    env = _env(home)
    owner = unlock_person(env, vault_owner(env))
    done = backup_keyset(env, name, owner.key)
    if json_out:
        emit_json(done.to_dict())
        return
    typer.echo(f"key set {name} kept in the vault as {done.vault_name} ({done.k}-of-{done.n})")


@key_app.command("restore")
def key_restore(
    name: NameArg,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a different key set of that name.")
    ] = False,
    acting: AsOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Restore key set NAME from the vault; it must open with its owner's key (--as)."""
    from tessera.workflows.he_keys import restore_keyset

    env = _env(home)
    signer = unlock_person(env, acting_name(env, acting))
    done = restore_keyset(env, name, signer, force=force)
    if json_out:
        emit_json(done.to_dict())
        return
    typer.echo(f"restored key set {name} from the vault ({done.k}-of-{done.n}); it opens")


def _schema(env_home: Path | None, schema: Path | None, table: str | None) -> Schema:
    if (schema is None) == (table is None):
        raise UsageError("give the column bounds with --schema FILE or --table NAME (one)")
    if schema is not None:
        try:
            return Schema.from_yaml(schema.read_bytes())
        except FileNotFoundError:
            raise UsageError(f"no schema file at {schema}") from None
    from tessera.workflows.he import table_schema

    assert table is not None
    return table_schema(_env(env_home), table)


def _window(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise UsageError("--window is LO:HI (two numbers)") from None
    return lo, hi


@app.command("encrypt")
def encrypt(
    source: Annotated[
        Path, typer.Argument(help="A CSV file, or a folder of DICOM slices (with --mask).")
    ],
    key: Annotated[str, typer.Option("--key", help="Key set name in HOME/he, or a .hebundle.")],
    out: Annotated[Path, typer.Option("--out", help="The encrypted data file to write.")],
    schema: Annotated[
        Path | None, typer.Option("--schema", help="Schema YAML with the columns' bounds.")
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(
            "--table", help="Take the bounds (and, at release, the policy) of this table."
        ),
    ] = None,
    columns: Annotated[
        str | None, typer.Option("--columns", help="Comma-separated columns (default: numeric).")
    ] = None,
    id_column: Annotated[
        str | None, typer.Option("--id-column", help="Column naming each row (kept sealed).")
    ] = None,
    skip_incomplete: Annotated[
        bool, typer.Option("--skip-incomplete", help="Leave out rows with an empty value.")
    ] = False,
    mask: Annotated[
        Path | None,
        typer.Option("--mask", help="Segmentation mask (DICOM folder or .npy) of the series."),
    ] = None,
    window: Annotated[
        str, typer.Option("--window", help="Intensity window LO:HI of the series (HU).")
    ] = "-1024:3071",
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Encrypt a table (column-wise, scaled by its bounds, with hidden sentinel rows) or a
    CT series and its mask, under a key set's public bundle."""
    from tessera.workflows.he import encrypt_csv, find_bundle

    env = Environment.load(resolve_home(home)) if _has_env(home) else None
    bundle = find_bundle(env, key)
    doc: dict[str, Any]
    if mask is not None:
        from tessera.workflows.he_imaging import encrypt_image

        doc = encrypt_image(source, mask, bundle, out, window=_window(window)).to_dict()
        said = f"{doc['voxels']} voxels ({doc['voxel_mm3']:.4g} mm^3 each)"
    else:
        if source.is_dir():
            raise UsageError(f"{source} is a folder: a DICOM series needs --mask")
        chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        made = encrypt_csv(
            source, bundle, out, schema=_schema(home, schema, table), table=table,
            columns=chosen, id_column=id_column, skip_incomplete=skip_incomplete,
        )  # fmt: skip
        doc = made.to_dict()
        said = f"{made.rows} rows x {len(made.columns)} columns"
        if made.skipped:
            said += f" ({made.skipped} incomplete rows left out)"
    add_detail(data_digest=str(doc["data_digest"]))
    if json_out:
        emit_json(doc)
        return
    typer.echo(
        f"encrypted {said} into {out}: {doc['chunks']} chunk(s), "
        f"{doc['sentinel_positions']} hidden sentinel positions, {doc['bytes']} bytes"
    )


def _has_env(home: Path | None) -> bool:
    try:
        return (resolve_home(home) / "tessera.toml").is_file()
    except Exception:  # no environment is fine: a bundle file works without one
        return False


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option("--port", help="Listen port (0: any free one).")] = 8473,
    host: Annotated[
        str, typer.Option("--host", help="Listen address (beyond loopback only with TLS).")
    ] = "127.0.0.1",
    models: Annotated[
        Path | None, typer.Option("--models", help="Folder of model JSON files to serve.")
    ] = None,
    max_upload_mb: Annotated[
        int, typer.Option("--max-upload-mb", min=1, help="Largest upload accepted (MiB).")
    ] = 512,
    max_store_mb: Annotated[
        int, typer.Option("--max-store-mb", min=1, help="Uploads kept in memory (MiB).")
    ] = 2048,
    max_jobs: Annotated[int, typer.Option("--max-jobs", min=1, help="Jobs run at once.")] = 2,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its PEM private key.")] = None,
) -> None:
    """Run the untrusted HE server in this process's place until interrupted: it takes key
    bundles, ciphertexts and jobs, and never a secret key."""
    args = [sys.executable, "-m", "tessera.server.he_main", "--host", host, "--port", str(port)]
    args += ["--max-upload-mb", str(max_upload_mb), "--max-store-mb", str(max_store_mb)]
    args += ["--max-jobs", str(max_jobs)]
    if models is not None:
        args += ["--models", str(models)]
    if tls_cert is not None:
        args += ["--tls-cert", str(tls_cert)]
    if tls_key is not None:
        args += ["--tls-key", str(tls_key)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, args)  # noqa: S606 - our own interpreter, fixed arguments


@app.command("run")
def run(
    server: Annotated[str, typer.Option("--server", help="The HE server's URL.")],
    job: Annotated[Path, typer.Option("--job", help="The job (YAML).")],
    data: Annotated[Path, typer.Option("--data", help="The encrypted data file.")],
    out: Annotated[Path, typer.Option("--out", help="The result file to write.")],
    ca_cert: Annotated[
        Path | None, typer.Option("--ca-cert", help="CA bundle to check an https server with.")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Send JOB on DATA to the server and keep its answer (no key needed; decrypt checks it)."""
    from tessera.workflows.he_run import read_job, run_job

    done = run_job(
        server, read_job(job), data, out, verify=str(ca_cert) if ca_cert is not None else True
    )
    add_detail(job_digest=done.job.digest)
    if json_out:
        emit_json(done.to_dict())
        return
    sent = f"; uploaded {', '.join(done.uploaded)}" if done.uploaded else ""
    typer.echo(
        f"{done.job.kind} answered in {done.server_seconds:.3g} s ({done.answer_bytes} bytes"
        f"{sent}): {out}"
    )


@app.command("decrypt")
def decrypt(
    result: Annotated[Path, typer.Argument(help="The result file of tessera he run.")],
    key: KeyOption = None,
    release: Annotated[
        bool,
        typer.Option(
            "--release",
            help="Release the aggregates under the table's policy (DP: budget charged, "
            "intervals stated).",
        ),
    ] = False,
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="Epsilon of a DP release.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write per-row scores to this CSV.")
    ] = None,
    acting: AsOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Decrypt RESULT with the owner's key set, after checking the hidden sentinels; a
    server that dropped, altered or skipped work is refused with the reason (exit 1)."""
    from tessera.workflows.he import decrypt_result

    if epsilon is not None and not release:
        raise UsageError("--epsilon applies to --release")
    env = _env(home)
    signer = unlock_person(env, acting_name(env, acting))
    opened = decrypt_result(env, signer, result, key=key)
    doc = opened.document
    add_detail(job_digest=str(doc["job_digest"]))
    if release:
        from tessera.workflows.he_release import release as release_under_policy

        doc = release_under_policy(env, signer.name, opened, epsilon=epsilon)
        if json_out:
            emit_json(doc)
            return
        _print_release(doc)
        return
    if out is not None:
        _write_scores(doc, out)
    if json_out:
        emit_json(doc)
        return
    _print_result(doc, out)


def _print_release(doc: dict[str, Any]) -> None:
    for name, value, interval in zip(doc["columns"], doc["values"], doc["intervals"], strict=True):
        shown = "suppressed" if value is None else human(value)
        if interval is not None and value is not None:
            shown += f" [{human(interval[0])}, {human(interval[1])}]"
        typer.echo(f"{name:<24} {shown}")
    privacy = doc.get("privacy")
    if privacy:
        left = (privacy.get("budget_remaining") or {}).get(doc["table"], {})
        typer.echo(
            f"differential privacy: ({human(privacy['epsilon'])}, {privacy['delta']:g})-DP "
            f"(rho {human(privacy['rho'])} zCDP); intervals hold with "
            f"{privacy['confidence']:.0%} probability; budget left: epsilon "
            f"{human(left.get('epsilon', 0.0))}"
        )
    else:
        typer.echo(f"table {doc['table']} has no DP policy: exact release")


def _write_scores(doc: dict[str, Any], out: Path) -> None:
    if doc.get("kind") != "scores":
        raise UsageError("--out writes per-row scores: this result holds no scores")
    rows = doc["scores"]
    fields = list(rows[0])
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out)


def _print_result(doc: dict[str, Any], out: Path | None) -> None:
    checks = doc["verification"]
    typer.echo(
        f"verified: {checks['sentinel_checks']} sentinel checks passed "
        f"({doc['sentinel_positions']} hidden positions of {doc['slots']} slots)"
    )
    kind = doc["kind"]
    if kind == "scores":
        for key, stats in doc["summary"].items():
            typer.echo(
                f"{doc['rows']} rows, {key} ({doc['model']}, link {doc['link']}): min "
                f"{human(stats['min'])}, mean {human(stats['mean'])}, max {human(stats['max'])}"
            )
        if out is not None:
            typer.echo(f"per-row {kind} written to {out}")
        else:
            for item in doc["scores"][:5]:
                typer.echo("  " + ", ".join(f"{k} {human(v)}" for k, v in item.items()))
            if doc["rows"] > 5:
                typer.echo(f"  ... {doc['rows'] - 5} more (--out FILE.csv, or --json)")
        return
    if kind == "imaging":
        typer.echo(
            f"structure: {doc['voxels']} voxels x {human(doc['voxel_mm3'])} mm^3 = "
            f"{human(doc['volume_mm3'])} mm^3 ({human(doc['volume_ml'])} mL); mean intensity "
            f"{human(doc['mean_intensity'])} {doc['intensity_unit']}"
        )
        return
    typer.echo(f"{doc['rows']} rows")
    for col in doc["columns"]:
        parts = [f"{k} {human(v)}" for k, v in col.items() if k != "name"]
        typer.echo(f"  {col['name']:<16} " + ", ".join(parts))
    if kind == "covariance":
        names = doc["covariance"]["columns"]
        typer.echo("covariance matrix (" + ", ".join(names) + "):")
        for row in doc["covariance"]["matrix"]:
            typer.echo("  " + "  ".join(f"{human(v):>12}" for v in row))

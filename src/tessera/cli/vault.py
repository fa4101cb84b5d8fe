"""``tessera vault``: files kept as k-of-n fragments across the environment's stores.

Exit codes: 0 success; 1 a Tessera error (one line on stderr), among them a put over an
existing name without ``--replace`` and ``ls``/``get`` on a vault whose stores lost files
the owner's record commits to; ``verify`` 0 healthy, 1 degraded, 2 lost.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from tessera.cli._common import (
    HomeOption,
    JsonOption,
    byte_progress,
    emit_json,
    resolve_home,
    stderr,
)
from tessera.cli._keys import unlock_person
from tessera.config import Environment
from tessera.errors import StorageUnavailableError, UsageError
from tessera.vault import Vault
from tessera.vault import refresh as refresh_objects
from tessera.vault import repair as repair_objects
from tessera.vault import verify as verify_objects
from tessera.vault.catalogue import Listing
from tessera.vault.record import VaultLostError
from tessera.vault.vault import SCHEMES
from tessera.workflows.audit_cli import add_detail
from tessera.workflows.vault import listing, open_vault, vault_owner, vault_settings

__all__ = ["app"]

T = TypeVar("T")

app = typer.Typer(
    help="Store files as k-of-n fragments across independent stores.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="Name of the file in the vault.")]
OptionalName = Annotated[
    str | None, typer.Argument(help="Only this file (default: every file).", show_default=False)
]


def _vault(home: Path | None, *, write: bool = False) -> tuple[Environment, Vault]:
    env = Environment.load(resolve_home(home))
    if not write:
        return env, open_vault(env)
    owner = unlock_person(env, vault_owner(env))  # asks on a terminal
    return env, open_vault(env, write=True, signer=owner.key)


@contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[[int], None] | None]:
    bar = byte_progress(total, what)
    if bar is None:
        yield None
        return
    with bar:
        task = bar.add_task(what, total=total)
        yield lambda done: bar.advance(task, done)


def _say(text: str, json_out: bool) -> None:
    if not json_out:
        typer.echo(text)


class FilesLostError(VaultLostError):
    """``verify``/``repair`` found files lost: exit 2, recorded as a failure (vault_lost)."""

    exit_code = 2


def _lost_line(names: list[str]) -> str:
    add_detail(reason="vault-lost", lost=len(names))
    shown = ", ".join(repr(n) for n in names[:5]) + (" …" if len(names) > 5 else "")
    return f"{len(names)} file(s) lost: {shown}"


def _lost_noted(read: Callable[[], T]) -> T:
    """Run ``read``; a lost vault is also noted on the command's audit event (monitor)."""
    try:
        return read()
    except VaultLostError:
        add_detail(reason="vault-lost")
        raise


@app.command("put")
def put(
    file: Annotated[Path, typer.Argument(help="File to store.", show_default=False)],
    name: Annotated[
        str | None, typer.Option("--name", help="Name in the vault (default: the file name).")
    ] = None,
    scheme: Annotated[
        str | None, typer.Option("--scheme", help="shamir (default) or ssms.")
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace", help="Replace an existing file of that name (refused otherwise)."
        ),
    ] = False,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Split FILE into fragments and commit one to every store."""
    env, vault = _vault(home, write=True)
    scheme = scheme or str(vault_settings(env)["scheme"])
    if scheme not in SCHEMES:
        raise UsageError(f"--scheme must be one of {', '.join(SCHEMES)}")
    name = name if name is not None else file.name
    if not name or len(name.encode()) > 1024 or any(ord(c) < 32 for c in name):
        raise UsageError("--name must be 1 to 1024 bytes of printable text")
    if not file.is_file():
        raise UsageError(f"{file} is not a file")
    with open(file, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        with _progress(size, "put") as progress:
            result = vault.put(
                source, size, name, scheme=scheme, replace=replace, progress=progress
            )
    if json_out:
        emit_json(result.to_json())
        return
    typer.echo(
        f"stored {name} ({size} bytes, {scheme} {result.k}-of-{result.n}) on stores "
        f"{', '.join(map(str, result.stores_written))}"
    )
    for sid, problem in result.stores_failed.items():
        typer.echo(f"degraded: store {sid} has no fragment ({problem}); run 'tessera vault repair'")


@app.command("get")
def get(
    name: NameArg,
    out: Annotated[Path, typer.Option("--out", help="Where to write the file.")],
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Restore NAME from the fastest k stores (falling back to the others)."""
    _env, vault = _vault(home)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name")
    manifest = _lost_noted(lambda: vault.lookup(name))
    with _progress(manifest.size, "get") as progress:
        result = vault.get(name, out, progress=progress, manifest=manifest)
    if json_out:
        emit_json(result.to_json())
        return
    typer.echo(f"restored {name} ({result.size} bytes) to {out}")
    for sid, problem in result.missing.items():
        typer.echo(f"store {sid} was not used: {problem}")
    for sid, problem in result.corrected.items():
        typer.echo(f"store {sid}'s fragment was bad and corrected around: {problem}")


@app.command("ls")
def ls(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """List the files in the vault."""
    _env, vault = _vault(home)
    doc = _lost_noted(lambda: listing(vault))
    if json_out:
        emit_json(doc)
        return
    for m in doc:
        typer.echo(
            f"{m['size']:>14}  {m['created']}  {m['scheme']} {m['k']}-of-{m['n']}  {m['name']}"
        )


@app.command("rm")
def rm(name: NameArg, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Remove NAME from every store (succeeds if it is already gone; acknowledges a loss)."""
    _env, vault = _vault(home, write=True)
    result = vault.rm(name)
    if json_out:
        emit_json(result.to_json())
        return
    typer.echo(f"removed {name}" if result.removed else f"{name} was not in the vault")


@app.command("verify")
def verify(
    name: OptionalName = None, home: HomeOption = None, json_out: JsonOption = False
) -> None:
    """Check every fragment; exit 0 healthy, 1 damaged but recoverable, 2 something lost."""
    _env, vault = _vault(home)
    try:
        result = verify_objects(vault, name)
    except StorageUnavailableError as exc:  # fewer than k stores answer: nothing is readable
        stderr.print(f"tessera: error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    damaged = sorted({p.store for o in result.objects for p in o.problems})
    if damaged:  # which stores hold the bad fragments: the monitor names them
        add_detail(stores=",".join(map(str, damaged)), damaged_objects=len(result.objects))
    if json_out:
        emit_json(result.to_json())
    else:
        for obj in result.objects:
            typer.echo(f"{obj.status:<9} {obj.name}")
            for problem in obj.problems:
                typer.echo(f"          store {problem.store}: {problem.problem}")
        for sid, reason in result.unreachable.items():
            typer.echo(f"unreachable store {sid}: {reason}")
        typer.echo(f"vault {result.status}")
    lost = sorted({o.name for o in result.objects if o.status == "lost"})
    if lost:  # exit 2 through an error, so the audit log records it (and the monitor sees it)
        too_few = vault.too_few(Listing({}, result.unreachable))
        raise FilesLostError(str(too_few) if too_few is not None else _lost_line(lost))
    raise typer.Exit(result.exit_code)


@app.command("repair")
def repair(
    name: OptionalName = None, home: HomeOption = None, json_out: JsonOption = False
) -> None:
    """Rewrite missing or damaged fragments from k good ones (no plaintext is formed)."""
    _env, vault = _vault(home)
    result = repair_objects(vault, name)
    if json_out:
        emit_json(result.to_json())
    else:
        for p in result.repaired:
            typer.echo(f"repaired store {p.store}: {p.problem}")
        for obj in result.failed:
            for p in obj.problems:
                typer.echo(f"could not repair {obj.name} on store {p.store}: {p.problem}")
        if not result.repaired and not result.failed:
            typer.echo("nothing to repair")
    lost = sorted({o.name for o in result.failed if o.status == "lost"})
    if lost:
        raise FilesLostError(_lost_line(lost))
    if result.failed:
        raise typer.Exit(1)


@app.command("refresh")
def refresh(
    name: OptionalName = None, home: HomeOption = None, json_out: JsonOption = False
) -> None:
    """Re-randomise every fragment; fragments taken before are useless with those after."""
    _env, vault = _vault(home, write=True)
    result = refresh_objects(vault, name)
    if json_out:
        emit_json(result.to_json())
        return
    for n in result.refreshed:
        typer.echo(f"refreshed {n} (generation {result.generations[n]})")


@app.command("mount")
def mount(
    port: Annotated[int, typer.Option("--port", help="Listen port (0: any free one).")] = 8472,
    host: Annotated[
        str, typer.Option("--host", help="Listen address (beyond loopback only with TLS).")
    ] = "127.0.0.1",
    read_only: Annotated[
        bool,
        typer.Option("--read-only", help="Refuse every write (and ask for no passphrase)."),
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain) for HTTPS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its PEM private key.")] = None,
    max_failed_logins: Annotated[
        int,
        typer.Option(
            "--max-failed-logins",
            min=1,
            help="Failed sign-ins from one address (or with one token) within 10 minutes "
            "before it is locked out (for twice as long each time).",
        ),
    ] = 20,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="One line per request on standard error (time, address, user, method, "
            "path, status, milliseconds).",
        ),
    ] = True,
    home: HomeOption = None,
) -> None:
    """Serve the vault over WebDAV, for Explorer, Finder and Linux file managers; runs in
    the foreground until Ctrl-C (docs/mount.md).

    Stewards sign in with their gateway user name and API token.  Writes are signed with
    the vault owner's key: unlocked here (the passphrase is asked as for put), or, when
    the vault's key is a gateway user's, by that user's own token.
    """
    import sys

    from tessera.workflows.vault_dav import check_listen

    root = resolve_home(home).resolve()
    env = Environment.load(root)
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    check_listen(host, tls=tls_cert is not None)
    args = [sys.executable, "-m", "tessera.server.dav", "--home", str(root), "--host", host]
    args += ["--port", str(port), "--max-failed-logins", str(max_failed_logins)]
    for flag, value in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if value is not None:
            args += [flag, str(value.resolve())]
    if read_only:
        args.append("--read-only")
    if not access_log:
        args.append("--no-access-log")
    key = Path(str(vault_settings(env)["signing_key"]))
    if not read_only and key.parts[:2] != ("gateway", "keys"):
        # The owner's key, unlocked here (a terminal prompt, or $TESSERA_PASSPHRASE), goes
        # to the server through a pipe: never in its arguments or its environment.
        owner = unlock_person(env, vault_owner(env))
        read_end, write_end = os.pipe()
        os.write(write_end, owner.key.seed_bytes())
        os.close(write_end)
        os.set_inheritable(read_end, True)
        args += ["--key-fd", str(read_end)]
    # The server takes this process's place, so Ctrl-C and SIGTERM reach it directly; it
    # needs no passphrase, so none is left in its environment.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_PASSPHRASE")}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, environ)  # noqa: S606 - our own interpreter, fixed arguments

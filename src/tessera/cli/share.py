"""``tessera share``: split a file into k-of-n fragments and combine them again."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from tessera.cli._common import HomeOption, JsonOption, byte_progress, emit_json, stderr
from tessera.core.fragment import (
    CombineReport,
    combine_stream,
    read_header,
    split_stream,
)
from tessera.errors import InputError, UsageError

app = typer.Typer(help="Split files into k-of-n fragments and restore them.", no_args_is_help=True)

_IO_BUFFER = 1 << 20


@contextlib.contextmanager
def _atomic_outputs(paths: list[Path]) -> Iterator[list[BinaryIO]]:
    """Open temporary files next to ``paths``; rename them into place only on success."""
    temps: list[tuple[BinaryIO, Path, Path]] = []
    try:
        for path in paths:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
            temps.append((os.fdopen(fd, "wb", buffering=_IO_BUFFER), Path(name), path))
        yield [f for f, _t, _p in temps]
        for f, _tmp, _path in temps:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for _f, tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for f, tmp, _path in temps:
            f.close()
            tmp.unlink(missing_ok=True)
        raise


def _progress_callback(
    total: int, label: str
) -> tuple[contextlib.AbstractContextManager[object], object]:
    bar = byte_progress(total, label)
    if bar is None:
        return contextlib.nullcontext(), None
    task = bar.add_task(label, total=total)
    return bar, lambda done: bar.advance(task, done)


WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", help="Threads that share blocks (default: one per CPU, at most 4)."),
]


ForceOption = Annotated[
    bool, typer.Option("--force", help="Overwrite output files that already exist.")
]


def _refuse_existing(paths: list[Path], force: bool) -> None:
    """Nothing is overwritten silently: an existing output needs --force."""
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise InputError(f"{existing[0]} already exists{more}; pass --force to overwrite it")


def _check_workers(workers: int | None) -> None:
    if workers is not None and not 1 <= workers <= 64:
        raise UsageError("--workers must be between 1 and 64")


@app.command("split")
def split(
    file: Annotated[Path, typer.Argument(help="File to split.", show_default=False)],
    threshold: Annotated[
        int, typer.Option("--threshold", "-k", help="Fragments needed to restore (k).")
    ],
    shares: Annotated[int, typer.Option("--shares", "-n", help="Fragments to write (n).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the fragment files.")],
    scheme: Annotated[
        str, typer.Option("--scheme", help="shamir (information-theoretic) or ssms (compact).")
    ] = "shamir",
    workers: WorkersOption = None,
    force: ForceOption = False,
    json_out: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Split FILE into N fragment files, any K of which restore it."""
    del home  # fragments on local disk need no environment
    _check_workers(workers)
    if scheme not in ("shamir", "ssms"):
        raise UsageError("--scheme must be shamir or ssms")
    if not 2 <= threshold <= shares <= 255:
        raise UsageError("need 2 <= --threshold <= --shares <= 255")
    if not file.is_file():
        raise InputError(f"{file}: no such file")
    size = file.stat().st_size
    width = len(str(shares))
    paths = [out / f"{file.name}.{i:0{width}d}-of-{shares}.tfrag" for i in range(1, shares + 1)]
    _refuse_existing(paths, force)
    out.mkdir(parents=True, exist_ok=True)
    bar, callback = _progress_callback(size, f"splitting {file.name}")
    with file.open("rb", buffering=_IO_BUFFER) as src, _atomic_outputs(paths) as dsts, bar:
        header = split_stream(
            src,
            dsts,
            k=threshold,
            size=size,
            scheme=scheme,
            progress=callback,  # type: ignore[arg-type]
            workers=workers,
        )
    if json_out:
        emit_json(
            {
                "input": str(file),
                "size": size,
                "scheme": scheme,
                "k": threshold,
                "n": shares,
                "object_id": header.object_id.hex(),
                "fragments": [str(p) for p in paths],
            }
        )
    else:
        stderr.print(
            f"split {file} ({size} bytes) into {shares} fragments in {out}; "
            f"any {threshold} restore it ({scheme})"
        )


def _report_json(report: CombineReport, out: Path, inputs: list[Path]) -> dict[str, object]:
    return {
        "output": str(out),
        "size": report.size,
        "object_id": report.object_id.hex(),
        "used": list(report.used),
        "bad": [
            {"fragment": str(inputs[b.position]), "index": b.index, "problem": b.reason}
            for b in report.bad
        ],
    }


@app.command("combine")
def combine(
    fragments: Annotated[list[Path], typer.Argument(help="Fragment files (k or more).")],
    out: Annotated[Path, typer.Option("--out", help="File to write.")],
    workers: WorkersOption = None,
    force: ForceOption = False,
    json_out: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Restore a file from K or more of its fragments, naming any bad ones."""
    del home
    _check_workers(workers)
    if out.exists() and out.is_dir():
        raise UsageError(f"{out} is a folder")
    _refuse_existing([out], force)
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        srcs: list[BinaryIO] = []
        for path in fragments:
            try:
                srcs.append(stack.enter_context(path.open("rb", buffering=_IO_BUFFER)))
            except OSError as exc:
                raise InputError(f"{path}: {exc.strerror or 'cannot open'}") from None
        srcs[0].seek(0)
        try:
            total = read_header(srcs[0]).padded_size
        except InputError:
            total = 0
        bar, callback = _progress_callback(total, f"restoring {out.name}")
        with _atomic_outputs([out]) as (dst,), bar:
            report = combine_stream(
                srcs,
                dst,
                progress=callback,  # type: ignore[arg-type]
                workers=workers,
            )
    for b in report.bad:
        stderr.print(f"warning: {fragments[b.position]}: {b.reason} (set aside)")
    if json_out:
        emit_json(_report_json(report, out, fragments))
    else:
        stderr.print(
            f"restored {out} ({report.size} bytes) from fragments "
            f"{', '.join(map(str, report.used))}"
        )


@app.command("inspect")
def inspect(
    fragments: Annotated[list[Path], typer.Argument(help="Fragment files.")],
    json_out: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Show the public header of fragment files (nothing secret is in it)."""
    del home
    rows = []
    for path in fragments:
        with path.open("rb") as f:
            h = read_header(f)
        rows.append(
            {
                "fragment": str(path),
                "scheme": h.scheme,
                "k": h.k,
                "n": h.n,
                "index": h.index,
                "object_id": h.object_id.hex(),
                "generation": h.generation,
                "padded_size": h.padded_size,
            }
        )
    if json_out:
        emit_json(rows)
        return
    for r in rows:
        typer.echo(
            f"{r['fragment']}: {r['scheme']} {r['k']}-of-{r['n']} fragment {r['index']}, "
            f"object {r['object_id']}, generation {r['generation']}, "
            f"padded size {r['padded_size']}"
        )

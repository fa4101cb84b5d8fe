"""The ``tessera`` command: sub-applications per feature, one error policy.

Exit codes: 0 success; 1 a refused or failed operation (one line on stderr, never a
traceback); 2 a usage error.  Set ``TESSERA_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import os
import sys

import click
import typer

from tessera import __version__
from tessera.cli import audit, budget, dicom, env, share, vault
from tessera.errors import TesseraError

__all__ = ["app", "main"]

app = typer.Typer(
    name="tessera",
    help="Tessera: medical data split across independent custodians; answers computed "
    "on the fragments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tessera {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Tessera: a trusted data environment for medical data."""


app.add_typer(share.app, name="share")
app.add_typer(dicom.app, name="dicom")
app.add_typer(vault.app, name="vault")
env.register(app)
app.add_typer(audit.app, name="audit")
app.add_typer(budget.app, name="budget")


def _fail(message: str, code: int) -> int:
    line = " ".join(message.split()) or "failed"
    sys.stderr.write(f"tessera: error: {line}\n")
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    debug = os.environ.get("TESSERA_DEBUG") == "1"
    try:
        result = app(args=argv, standalone_mode=False, prog_name="tessera")
    except TesseraError as exc:
        if debug:
            raise
        return _fail(str(exc), exc.exit_code)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.exceptions.Abort:
        return _fail("aborted", 130)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        return 1
    except MemoryError:
        return _fail("out of memory", 1)
    except OSError as exc:
        if debug:
            raise
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        return _fail(f"{exc.strerror or exc.__class__.__name__}{where}", 1)
    except Exception as exc:  # last line of defence: never a traceback for users
        if debug:
            raise
        return _fail(f"internal error ({exc.__class__.__name__}); rerun with TESSERA_DEBUG=1", 1)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

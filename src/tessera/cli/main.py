"""The ``tessera`` command: sub-applications per feature, one error policy.

Exit codes: 0 success; 1 a refused or failed operation (one line on stderr, never a
traceback); 2 a usage error.  Set ``TESSERA_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import os
import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from tessera.errors import TesseraError
from tessera.version import PROTOCOL_VERSION, __version__
from tessera.workflows.audit_cli import run_audited

__all__ = ["COMMANDS", "GROUPS", "build_app", "main"]

# Sub-commands are imported only when used, so that `tessera share ...` does not pay
# for importing pydicom, MPyC or scikit-learn.  Register a feature here:
#   GROUPS:   "name" -> module exposing `app` (a typer.Typer group)
#   COMMANDS: "name" -> module exposing `register(app)` for top-level commands
GROUPS: dict[str, str] = {
    "share": "tessera.cli.share",
    "vault": "tessera.cli.vault",
    "audit": "tessera.cli.audit",
    "monitor": "tessera.cli.monitor",
    "budget": "tessera.cli.budget",
    "table": "tessera.cli.table",
    "node": "tessera.cli.node",
    "dicom": "tessera.cli.dicom",
    "risk": "tessera.cli.risk",
    "user": "tessera.cli.user",
    "person": "tessera.cli.person",
    "request": "tessera.cli.request",
    "consortium": "tessera.cli.consortium",
    "he": "tessera.cli.he",
}
COMMANDS: dict[str, str] = {
    "init": "tessera.cli.env",
    "query": "tessera.cli.query",
    "recommend": "tessera.cli.recommend",
    "demo": "tessera.cli.demo",
    "serve": "tessera.cli.serve",
}


def _unwrap(text: str | None) -> str | None:
    """Help text with the line breaks of its source joined: paragraphs (blank-line
    separated) stay, and rich re-wraps each one at the terminal's width."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


#: What a value option's placeholder says, where its name alone would not.
_METAVARS = {
    "--as": "NAME",
    "--researcher": "NAME",
    "--cosign": "NAME",
    "--grant": "NAME",
    "--home": "DIR",
    "--dir": "DIR",
    "--out": "PATH",
    "--schema": "FILE",
    "--key-file": "FILE",
    "--patient": "FILE",
    "--purpose": "TEXT",
    "--reason": "TEXT",
}


def _metavar(param: Any) -> str | None:
    """A placeholder people read (``--as NAME``, ``--epsilon NUMBER``, ``NAME``) instead
    of the Python type typer shows (``<str>``, ``<list[str]>``); None keeps typer's
    (an enum lists its values)."""
    if getattr(param, "param_type_name", "") == "argument":
        return str(param.name or "value").upper()
    opts = list(getattr(param, "opts", ()) or ())
    for opt in opts:
        if opt in _METAVARS:
            return _METAVARS[opt]
    kind = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return None
    text = str(kind)
    if "Path" in text:
        return "PATH"
    if "float" in text:
        return "NUMBER"
    if "int" in text:
        return "N"
    return max(opts, key=len).lstrip("-").upper() if opts else None


def _tidy_help(command: TyperCommand | TyperGroup) -> None:
    """No ``<bool>`` placeholder after a flag (``--json``, ``--help``), a readable one
    after a value option (``--as NAME``, not ``<str>``), and no sentence broken where
    the docstring's line ended; the whole tree under ``command``."""
    command.help = _unwrap(command.help)
    command.short_help = _unwrap(command.short_help)
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option else [])]:
        if getattr(param, "is_flag", False):
            param.metavar = ""  # typer shows the type of a flag, <bool>, unless given one
        elif param.metavar is None:
            param.metavar = _metavar(param)
        if getattr(param, "help", None):
            param.help = _unwrap(param.help)  # type: ignore[attr-defined]
    for sub in getattr(command, "commands", {}).values():
        if isinstance(sub, TyperCommand | TyperGroup):
            _tidy_help(sub)


class TesseraGroup(TyperGroup):
    """The root ``tessera`` group: its whole tree's help tidied once it is built."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _tidy_help(self)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tessera {__version__} (protocol {PROTOCOL_VERSION})")
        raise typer.Exit()


def build_app(only: str | None = None) -> typer.Typer:
    """The Typer application with every sub-command, or only ``only`` when known."""
    app = typer.Typer(
        name="tessera",
        cls=TesseraGroup,
        help="Tessera: medical data split across independent custodians; answers computed "
        "on the fragments.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ) -> None:
        """Tessera: a trusted data environment for medical data."""

    for name, module in GROUPS.items():
        if only is None or only == name:
            app.add_typer(importlib.import_module(module).app, name=name)
    for name, module in COMMANDS.items():
        if only is None or only == name:
            importlib.import_module(module).register(app)
    return app


def _command_name(argv: list[str]) -> str | None:
    for token in argv:
        if not token.startswith("-"):
            return token if token in GROUPS or token in COMMANDS else None
        if token in ("--help", "--version"):
            return None
    return None


def _fail(message: str, code: int) -> int:
    line = " ".join(message.split()) or "failed"
    sys.stderr.write(f"tessera: error: {line}\n")
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code.

    Click handles usage errors itself (message, exit 2); everything Tessera raises on
    purpose becomes one line on stderr and exit 1; anything else is reported as an
    internal error without a traceback unless TESSERA_DEBUG=1.
    """
    debug = os.environ.get("TESSERA_DEBUG") == "1"
    try:
        args = sys.argv[1:] if argv is None else argv
        run_audited(build_app(_command_name(args)), args)  # one audit event per command
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except TesseraError as exc:
        if debug:
            raise
        return _fail(str(exc), exc.exit_code)
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
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

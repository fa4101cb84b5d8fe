"""One audit event per ``tessera`` command: the central hook of the command line.

:func:`run_audited` runs the Typer application and, whatever happens, appends one
:class:`~tessera.core.audit_sink.AuditEvent` describing the command to the gateway log of
the environment the command worked in.  The exception (or exit) then goes on unchanged to
the error policy in :mod:`tessera.cli.main`.

Rules (see docs/audit.md, "What is recorded"):

* only where an environment exists at the resolved home (``--home``, else
  ``$TESSERA_HOME``, else ``./.tessera``): a ``tessera.toml`` or an existing gateway log;
  nothing is created where there is none (``tessera share`` on plain files writes nothing);
* never for ``--help``, ``--version``, a group without a sub-command or a usage error
  that Click caught before the command ran (exit 2 without a Tessera error);
* never for ``tessera audit ...`` (reading or recording the log itself: the audit
  commands record what they must themselves, and the hook must not recurse) nor for
  ``tessera dicom reidentify`` / ``dicom original`` (their workflow records each
  retrieval itself, success or not);
* outcome: ``success`` (exit 0), ``denied`` for a PolicyError (a deliberate refusal),
  ``not_found`` for a NotFoundError, ``failure`` for any other TesseraError or a non-zero
  exit, ``error`` when the system failed (an OSError or an unexpected exception);
  ``detail["error"]`` carries the error class code, never its message;
* the agent is the OS user (``getpass.getuser()``), role ``$TESSERA_ROLE``, address
  127.0.0.1, client ``tessera-cli``; source ``gateway``;
* entity: the vault name, table name or node id from the arguments; SQL text only as its
  SHA-256 (``detail["query_hash"]``); nothing secret is read from the arguments.

Workflows may add public facts about the result to the command's event with
:func:`add_detail` (``tessera query`` adds the cohort size ``rows`` of an exact
release); outside :func:`run_audited` it does nothing.

Auditing never breaks a command: if the event cannot be written, one warning line goes to
stderr and the command's own exit code stands.  Only stdlib and the core audit record are
imported here; Click and the log are imported when an event is actually written.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessera.config import default_home
from tessera.core.audit_sink import Action, AuditEvent, DetailValue
from tessera.errors import NotFoundError, PolicyError, TesseraError

__all__ = [
    "ACTIONS",
    "CommandCall",
    "add_detail",
    "collecting_detail",
    "command_event",
    "outcome_of",
    "run_audited",
]

CLIENT = "tessera-cli"
LOCAL_ADDRESS = "127.0.0.1"

#: command path -> audit action (paths not listed become ``"<group>.<command>"``).
ACTIONS: dict[tuple[str, ...], str] = {
    ("init",): "environment.init",
    ("vault", "put"): Action.VAULT_PUT,
    ("vault", "get"): Action.VAULT_GET,
    ("vault", "rm"): Action.VAULT_RM,
    ("vault", "verify"): Action.VAULT_VERIFY,
    ("vault", "repair"): Action.VAULT_REPAIR,
    ("table", "import"): Action.TABLE_IMPORT,
    ("query",): Action.QUERY,
    ("recommend",): Action.RECOMMEND,
    ("dicom", "deidentify"): Action.DICOM_DEIDENTIFY,
    ("monitor", "export"): Action.EXPORT,
}

#: commands that never produce an event from this hook (they record themselves or read
#: the log: recording them here would recurse or double-count).
SKIPPED: frozenset[tuple[str, ...]] = frozenset(
    {("audit",), ("dicom", "reidentify"), ("dicom", "original")}
)

#: detail the running command's workflow adds to its event (None: no command is audited).
_EXTRA: ContextVar[dict[str, DetailValue] | None] = ContextVar("tessera_audit_extra", default=None)


@contextlib.contextmanager
def collecting_detail() -> Iterator[dict[str, DetailValue]]:
    """Collect what workflows :func:`add_detail` while the block runs (the gateway
    records it with the request's event, as :func:`run_audited` does for commands)."""
    collected: dict[str, DetailValue] = {}
    token = _EXTRA.set(collected)
    try:
        yield collected
    finally:
        _EXTRA.reset(token)


def add_detail(**values: DetailValue) -> None:
    """Add public, non-secret facts to the audit event of the command now running.

    The command's own keys (``command``, ``error``, ``query_hash`` …) are never replaced.
    Outside :func:`run_audited` (library use, tests) this does nothing.
    """
    extra = _EXTRA.get()
    if extra is not None:
        extra.update(values)


# Policy commands: a change when they set something, a read otherwise.
_POLICY_PATHS = {("table", "policy"), ("budget", "policy")}


@dataclass(frozen=True)
class CommandCall:
    """What the command line asked for: the command path and its parsed parameters."""

    path: tuple[str, ...]
    params: Mapping[str, Any]


def _resolve(app: Any, args: list[str]) -> CommandCall | None:
    """The leaf command ``args`` name and its parameters (None: help, group, bad usage)."""
    import typer.main  # Typer carries its own Click: groups are told by resolve_command

    if any(a in ("--help", "--version") for a in args):
        return None
    cmd: Any = typer.main.get_command(app)
    ctx: Any = None
    rest = list(args)
    path: list[str] = []
    while True:
        ctx = cmd.make_context(
            path[-1] if path else "tessera", rest, parent=ctx, resilient_parsing=True
        )
        if not hasattr(cmd, "resolve_command"):
            return CommandCall(tuple(path), dict(ctx.params))
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            return None
        name, sub, rest = cmd.resolve_command(ctx, rest)
        if sub is None or name is None:
            return None
        path.append(name)
        cmd = sub


def outcome_of(error: BaseException | None) -> tuple[str, str] | None:
    """(outcome, error code) for how a command ended; None: not an auditable run."""
    if error is None:
        return "success", ""
    if isinstance(error, SystemExit):
        code = error.code
        if code is None or code == 0:
            return "success", ""
        if code == 2:
            return None  # Click's usage error: the command did not run
        return "failure", f"exit_{code}" if isinstance(code, int) else "exit"
    if isinstance(error, PolicyError):
        return "denied", error.code
    if isinstance(error, NotFoundError):
        return "not_found", error.code
    if isinstance(error, TesseraError):
        return "failure", error.code
    if isinstance(error, KeyboardInterrupt):
        return "failure", "interrupted"
    if isinstance(error, OSError):
        return "error", "os_error"
    return "error", "internal_error"


def _home(params: Mapping[str, Any], path: tuple[str, ...]) -> Path:
    if path == ("init",) and params.get("directory") is not None:
        return Path(params["directory"])
    if params.get("home") is not None:
        return Path(params["home"])
    if path == ("init",):  # a new environment is never the remembered one
        env = os.environ.get("TESSERA_HOME")
        return Path(env) if env else Path(".tessera")
    return default_home()


def has_environment(home: Path) -> bool:
    """Whether ``home`` holds an environment (or at least a gateway log) to record in."""
    return (home / "tessera.toml").is_file() or (home / "audit" / "log.json").is_file()


def _query_table(sql: str) -> str:
    """The first table an SQL text names (only if sqlglot is already loaded: cheap)."""
    if "sqlglot" not in sys.modules:
        return ""
    try:
        import sqlglot
        from sqlglot import exp

        tree = sqlglot.parse_one(sql)
        table = next(iter(tree.find_all(exp.Table)), None)
    except Exception:  # a query the parser rejects was refused by the command anyway
        return ""
    return table.name if table is not None else ""


def _action(path: tuple[str, ...], params: Mapping[str, Any]) -> str:
    if path in _POLICY_PATHS:
        return Action.POLICY_CHANGE if params.get("mode") is not None else "policy.show"
    return str(ACTIONS.get(path, ".".join(path)))


def _entity(path: tuple[str, ...], params: Mapping[str, Any]) -> tuple[str, str]:
    group = path[0]
    if group == "vault" and params.get("name"):
        return str(params["name"]), "object"
    if group == "table" and params.get("name"):
        return str(params["name"]), "table"
    if group == "budget" and params.get("name"):
        return str(params["name"]), "table"
    if group == "budget" and params.get("table"):
        return str(params["table"]), "table"
    if group == "recommend" and params.get("table"):
        return str(params["table"]), "table"
    if group == "node" and params.get("node") is not None:
        return f"node-{params['node']}", "node"
    return "", ""


def command_event(
    call: CommandCall,
    outcome: str,
    error_code: str = "",
    *,
    user: str | None = None,
    extra: Mapping[str, DetailValue] | None = None,
) -> AuditEvent:
    """The audit event for ``call`` ending with ``outcome`` (no secrets: names and hashes)."""
    params = call.params
    entity, entity_type = _entity(call.path, params)
    detail: dict[str, DetailValue] = {"command": " ".join(call.path)}
    if error_code:
        detail["error"] = error_code
    if call.path == ("query",) and isinstance(params.get("sql"), str):
        sql = params["sql"]
        detail["query_hash"] = hashlib.sha256(sql.encode("utf-8")).hexdigest()
        entity, entity_type = _query_table(sql), "table"
        if params.get("epsilon") is not None:
            detail["epsilon"] = float(params["epsilon"])
    if error_code == "budget_exhausted":
        detail["reason"] = "budget"
    for key, value in (extra or {}).items():
        detail.setdefault(key, value)
    return AuditEvent(
        str(_action(call.path, params)),
        outcome=outcome,
        user=user if user is not None else getpass.getuser(),
        role=os.environ.get("TESSERA_ROLE", ""),
        address=LOCAL_ADDRESS,
        client=CLIENT,
        source="gateway",
        entity=entity,
        entity_type=entity_type if entity else "",
        detail=detail,
    )


def _note(app: Any, args: list[str], error: BaseException | None) -> None:
    ended = outcome_of(error)
    if ended is None:
        return
    try:
        call = _resolve(app, args)
        if call is None or not call.path:
            return
        if call.path[:1] in SKIPPED or call.path in SKIPPED:
            return
        home = _home(call.params, call.path)
        if not has_environment(home):
            return
        from tessera.workflows.audit import gateway_log

        gateway_log(home).append([command_event(call, *ended, extra=_EXTRA.get())])
    except Exception as exc:  # auditing never breaks the command
        name = exc.code if isinstance(exc, TesseraError) else exc.__class__.__name__
        sys.stderr.write(f"tessera: warning: the audit event was not recorded ({name})\n")


def run_audited(app: Callable[..., Any], args: list[str]) -> None:
    """Run the Typer ``app`` on ``args`` and record the command in the gateway log."""
    with collecting_detail():
        try:
            app(args=args, prog_name="tessera")
        except BaseException as exc:
            _note(app, args, exc)
            raise
        _note(app, args, None)

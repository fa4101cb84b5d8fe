"""The command each route stands for in the audit log, found by the request's path.

A route with a path parameter (``/api/v1/requests/{id}/approve``) is listed once by its
template; :meth:`RouteCalls.get` finds it for any concrete path, so a request refused
as invalid (422) before it ran is audited like the rest (see
:meth:`tessera.server.auth.Gate.invalid`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TypeVar, overload

from tessera.workflows.audit_cli import CommandCall

__all__ = ["RouteCalls"]

T = TypeVar("T")
_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


class RouteCalls(dict[str, CommandCall]):
    """Path (or path template) -> command; ``get`` also matches templates."""

    @overload
    def get(self, key: str, default: None = None, /) -> CommandCall | None: ...

    @overload
    def get(self, key: str, default: CommandCall, /) -> CommandCall: ...

    @overload
    def get(self, key: str, default: T, /) -> CommandCall | T: ...

    def get(self, key: str, default: object = None, /) -> object:
        """The command of ``key``, a concrete path or a template; ``default`` if none."""
        found = super().get(key)
        if found is not None:
            return found
        for template, call in self.items():
            if "{" in template and _pattern(template).fullmatch(key):
                return call
        return default


@lru_cache(maxsize=64)
def _pattern(template: str) -> re.Pattern[str]:
    parts = _PARAM.split(template)
    return re.compile("[^/]+".join(re.escape(p) for p in parts))

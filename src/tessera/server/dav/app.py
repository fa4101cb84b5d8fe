"""The WSGI application of ``tessera vault mount``: the gate, then wsgidav over the vault.

wsgidav (MIT) does the protocol: PROPFIND and PROPPATCH, locks (its lock manager, in
memory for the life of the process), dead properties (in memory too), If headers,
ranges, COPY and MOVE.  Its own authenticator, directory browser and error printer are
left out: :mod:`.gate` signs users in and audits, :mod:`.answer` answers errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from tessera.config import Environment
from tessera.server.dav.answer import Answer
from tessera.server.dav.gate import Gate, Grants
from tessera.server.dav.provider import VaultProvider
from tessera.vault import Vault
from tessera.workflows.vault import vault_settings
from tessera.workflows.vault_dav import VaultFiles

__all__ = ["BLOCK_SIZE", "create_app"]

#: Bytes read from a PUT body, and sent of a GET answer, at a time.
BLOCK_SIZE = 1 << 20


def create_app(
    env: Environment, vault: Vault, grants: Grants, *, max_failed_logins: int = 20
) -> tuple[Callable[..., Any], Gate]:
    """The mount's WSGI application over ``vault``, and its gate (for its journal)."""
    files = VaultFiles(
        vault,
        scheme=str(vault_settings(env)["scheme"]),
        spool_dir=env.home / "vault" / "spool",
    )
    provider = VaultProvider(files, read_only=grants.read_only)
    config = {
        "provider_mapping": {"/": provider},
        "middleware_stack": [Answer, RequestResolver],
        "lock_storage": True,
        "property_manager": True,
        "block_size": BLOCK_SIZE,
        "verbose": 0,
        "logging": {"enable": False},
        "suppress_version_info": True,
        "add_header_MS_Author_Via": True,  # Office edits in place only with it
        "dir_browser": {"enable": False},
        "http_authenticator": {"accept_basic": True, "accept_digest": False},
    }
    gate = Gate.create(env, grants, max_failed_logins=max_failed_logins)
    return gate.wrap(WsgiDAVApp(config)), gate

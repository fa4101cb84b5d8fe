"""Configuration of a Tessera environment (layer 2: read by the L3 entry points only).

An environment is a folder (``--home``, ``$TESSERA_HOME``, else ``./.tessera`` where it
exists, else the one ``tessera init`` made last: :func:`default_home`) holding
``tessera.toml``::

    [environment]
    version = 1
    name = "tessera"
    nodes = 5               # custodians
    threshold = 3           # default k for files in the vault
    mpc_threshold = 2       # t = (n-1)//2 for secret tables (honest majority)

    [[stores]]              # one per custodian, by fsspec URL
    id = 1
    url = "file:///…/stores/node-1"

    [[nodes]]               # custodian node services (loopback in the embedded default)
    id = 1
    host = "127.0.0.1"
    port = 47101

Feature packages add their own tables (``[vault]``, ``[mpc]`` …); unknown keys are
kept when the file is rewritten.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from tessera.errors import ConfigError

__all__ = [
    "CONFIG_NAME",
    "Environment",
    "NodeConfig",
    "StoreConfig",
    "default_home",
    "missing_environment",
    "remember_home",
    "remembered_home",
    "remembered_home_file",
]

CONFIG_NAME = "tessera.toml"


HOME_ENV = "TESSERA_HOME"
LOCAL_HOME = Path(".tessera")


def remembered_home_file() -> Path:
    """Where ``tessera init`` remembers the environment it made last:
    ``$XDG_CONFIG_HOME/tessera/home`` (default ``~/.config/tessera/home``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tessera" / "home"


def remembered_home() -> Path | None:
    """The environment ``tessera init`` made last, if it still holds one."""
    try:
        text = remembered_home_file().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError, RuntimeError):
        return None
    folder = Path(text)
    return folder if text and folder.is_absolute() and (folder / CONFIG_NAME).is_file() else None


def remember_home(home: Path) -> Path | None:
    """Remember ``home`` as the environment made last; the file written, or None when
    it cannot be written (a read-only home folder is not an error)."""
    try:
        path = remembered_home_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".home.{os.getpid()}.tmp")
        tmp.write_text(f"{home.resolve()}\n", encoding="utf-8")
        os.replace(tmp, path)
    except (OSError, RuntimeError):
        return None
    return path


def missing_environment(home: Path) -> ConfigError:
    """The error for a folder without ``tessera.toml``, naming how to make and find one."""
    return ConfigError(
        f"no Tessera environment at {home}: create one with 'tessera init DIR', then point "
        f"at it with 'export {HOME_ENV}=DIR' or '--home DIR'"
    )


def default_home() -> Path:
    """The environment folder when no ``--home`` is given, explicit before implicit:
    ``$TESSERA_HOME``; else ``./.tessera`` when it exists; else the environment
    ``tessera init`` made last (:func:`remembered_home`); else ``./.tessera``."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env)
    if LOCAL_HOME.exists():
        return LOCAL_HOME
    return remembered_home() or LOCAL_HOME


@dataclass(frozen=True)
class StoreConfig:
    """One custodian's store, by fsspec URL (plus fsspec options)."""

    id: int
    url: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeConfig:
    """One custodian node service."""

    id: int
    host: str = "127.0.0.1"
    port: int = 0


@dataclass
class Environment:
    """A loaded ``tessera.toml``; ``extra`` keeps the tables other features own."""

    home: Path
    name: str
    threshold: int
    stores: list[StoreConfig]
    nodes: list[NodeConfig]
    mpc_threshold: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of custodians."""
        return len(self.stores)

    @property
    def path(self) -> Path:
        """The configuration file."""
        return self.home / CONFIG_NAME

    @classmethod
    def load(cls, home: Path) -> Environment:
        """Read ``home/tessera.toml``; ConfigError names what is wrong."""
        path = home / CONFIG_NAME
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise missing_environment(home) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        try:
            env = data.pop("environment")
            stores = [
                StoreConfig(int(s["id"]), str(s["url"]), dict(s.get("options", {})))
                for s in data.pop("stores")
            ]
            nodes = [
                NodeConfig(int(n["id"]), str(n.get("host", "127.0.0.1")), int(n.get("port", 0)))
                for n in data.pop("nodes", [])
            ]
            result = cls(
                home=home,
                name=str(env.get("name", "tessera")),
                threshold=int(env["threshold"]),
                stores=stores,
                nodes=nodes,
                mpc_threshold=int(env.get("mpc_threshold", (len(stores) - 1) // 2)),
                extra=data,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: missing or invalid setting {exc}") from None
        result.check()
        return result

    def check(self) -> None:
        """Raise ConfigError unless 2 <= threshold <= n and store ids are 1..n."""
        if not 2 <= self.threshold <= self.n:
            raise ConfigError(f"threshold {self.threshold} must be between 2 and {self.n}")
        if sorted(s.id for s in self.stores) != list(range(1, self.n + 1)):
            raise ConfigError("store ids must be 1..n")

    def to_toml(self) -> dict[str, Any]:
        """The TOML document for this environment."""
        doc: dict[str, Any] = {
            "environment": {
                "version": 1,
                "name": self.name,
                "nodes": self.n,
                "threshold": self.threshold,
                "mpc_threshold": self.mpc_threshold,
            },
            "stores": [
                {"id": s.id, "url": s.url, **({"options": s.options} if s.options else {})}
                for s in self.stores
            ],
            "nodes": [{"id": n.id, "host": n.host, "port": n.port} for n in self.nodes],
        }
        doc.update(self.extra)
        return doc

    def save(self) -> None:
        """Write ``tessera.toml`` atomically."""
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".toml.tmp")
        tmp.write_bytes(tomli_w.dumps(self.to_toml()).encode())
        os.replace(tmp, self.path)

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
    "NodeSettings",
    "StoreConfig",
    "default_home",
    "missing_environment",
    "parse_max_jobs",
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


def _host_port(text: Any, what: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} must be HOST:PORT, not {str(text)[:60]!r}")
    return host.strip("[]"), int(port)


def parse_max_jobs(raw: object, where: str) -> int | None:
    """A node's ``max_jobs`` setting (None when not set); ConfigError naming ``where``."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 4096:
        raise ConfigError(f"{where} must be a whole number 1..4096, not {str(raw)[:40]!r}")
    return raw


@dataclass(frozen=True)
class NodeSettings:
    """A federated custodian's ``node.toml`` (``tessera node start --config FILE``)::

        [node]
        id = 2
        listen = "0.0.0.0:47101"          # where it binds
        address = "10.0.0.2:47101"        # where the others reach it (in its certificate)
        data = "/var/lib/tessera"          # shares, ledger, roster, audit log
        tls_cert = "/etc/tessera/tls/node.crt"
        tls_key = "/etc/tessera/tls/node.key"
        consortium = "/var/lib/tessera/consortium.json"   # the installed manifest
        log = "json"                      # or "text": on stdout
        idle_exit = 0                     # seconds without a request before exiting (0: never)
        max_jobs = 8                      # jobs run at once (default: twice the cores, >= 4)

    Relative paths are taken from the file's folder.
    """

    path: Path
    id: int
    listen: tuple[str, int]
    address: tuple[str, int]
    data: Path
    tls_cert: Path
    tls_key: Path
    consortium: Path
    log: str = "text"
    idle_exit: float = 0.0
    max_jobs: int | None = None

    @classmethod
    def load(cls, path: Path) -> NodeSettings:
        """Read a node.toml; ConfigError names what is wrong."""
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"no node configuration at {path} (make one: tessera node init)"
            ) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        node = doc.get("node")
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: no [node] table")
        base = path.resolve().parent

        def where(key: str, default: str | None = None) -> Path:
            raw = node.get(key, default)
            if not isinstance(raw, str) or not raw:
                raise ConfigError(f"{path}: [node] {key} must be a path")
            p = Path(raw)
            return p if p.is_absolute() else base / p

        try:
            node_id = int(node["id"])
            listen = _host_port(node.get("listen", ""), f"{path}: [node] listen")
            address = _host_port(
                node.get("address", node.get("listen", "")), f"{path}: [node] address"
            )
            idle = float(node.get("idle_exit", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: missing or invalid setting {exc}") from None
        log = str(node.get("log", "text"))
        if log not in ("text", "json"):
            raise ConfigError(f"{path}: [node] log is text or json, not {log[:20]!r}")
        if not 1 <= node_id <= 255 or idle < 0:
            raise ConfigError(f"{path}: [node] id must be 1..255 and idle_exit >= 0")
        data = where("data")
        return cls(
            path=path.resolve(),
            id=node_id,
            listen=listen,
            address=address,
            data=data,
            tls_cert=where("tls_cert"),
            tls_key=where("tls_key"),
            consortium=where("consortium", str(data / "consortium.json")),
            log=log,
            idle_exit=idle,
            max_jobs=parse_max_jobs(node.get("max_jobs"), f"{path}: [node] max_jobs"),
        )

    def to_toml(self) -> dict[str, Any]:
        """The TOML document."""
        return {
            "node": {
                "id": self.id,
                "listen": f"{self.listen[0]}:{self.listen[1]}",
                "address": f"{self.address[0]}:{self.address[1]}",
                "data": str(self.data),
                "tls_cert": str(self.tls_cert),
                "tls_key": str(self.tls_key),
                "consortium": str(self.consortium),
                "log": self.log,
                "idle_exit": self.idle_exit,
                **({} if self.max_jobs is None else {"max_jobs": self.max_jobs}),
            }
        }

    def save(self) -> None:
        """Write the file atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(tomli_w.dumps(self.to_toml()).encode())
        os.replace(tmp, self.path)

"""A local crash journal: what to undo (or finish) if a vault operation dies midway.

Before a put or refresh touches any store it records, in the client's environment
folder, the catalogue entry whose presence marks the operation as committed and two
lists of store paths: those to delete if it never committed, and those to delete once it
has.  The next vault command of any process finds the records of dead processes and
completes them either way (``Vault.recover``).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["Journal", "Record"]


@dataclass
class Record:
    """One operation in flight."""

    op: str
    token: str
    commit_entry: str
    on_rollback: list[str] = field(default_factory=list)
    on_commit: list[str] = field(default_factory=list)
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Journal:
    """Records in ``folder`` (one small JSON file per operation in flight)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, record: Record) -> None:
        """Create or replace the record (atomically)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{record.token}.json"
        tmp = self.folder / f".{record.token}.{secrets.token_hex(4)}.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(asdict(record), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)

    def remove(self, record: Record) -> None:
        """Forget a finished operation."""
        (self.folder / f"{record.token}.json").unlink(missing_ok=True)

    def orphans(self) -> list[Record]:
        """Records of operations whose process died on this host."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                record = Record(**json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError, OSError):
                path.unlink(missing_ok=True)
                continue
            if record.host == socket.gethostname() and not _alive(record.pid):
                found.append(record)
        return found

"""What vault operations report (plain dataclasses; ``to_json`` gives the CLI shapes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GetResult",
    "ObjectHealth",
    "Problem",
    "PutResult",
    "RefreshResult",
    "RepairResult",
    "RmResult",
    "VerifyResult",
    "worst",
]

_RANK = {"healthy": 0, "degraded": 1, "lost": 2}


def worst(statuses: list[str]) -> str:
    """The worst of healthy < degraded < lost (healthy for none)."""
    return max(statuses, key=_RANK.__getitem__, default="healthy")


@dataclass(frozen=True)
class PutResult:
    """A committed put."""

    name: str
    size: int
    scheme: str
    k: int
    n: int
    stores_written: list[int]
    stores_failed: dict[int, str]
    replaced: int  # older versions of the name removed

    @property
    def degraded(self) -> bool:
        """True when some stores did not get their fragment (run repair)."""
        return bool(self.stores_failed)

    def to_json(self) -> dict[str, Any]:
        """The ``vault put --json`` document."""
        return {
            "name": self.name,
            "size": self.size,
            "scheme": self.scheme,
            "k": self.k,
            "n": self.n,
            "status": "degraded" if self.degraded else "healthy",
            "stores_written": self.stores_written,
            "stores_failed": [
                {"store": str(s), "problem": p} for s, p in self.stores_failed.items()
            ],
        }


@dataclass(frozen=True)
class GetResult:
    """A completed get."""

    name: str
    size: int
    used: list[int]  # store ids whose fragments were combined
    missing: dict[int, str]  # stores that could not be read, and why
    corrected: dict[int, str]  # fragments found bad and corrected around

    def to_json(self) -> dict[str, Any]:
        """The ``vault get --json`` document."""
        return {
            "name": self.name,
            "size": self.size,
            "used": self.used,
            "missing": [{"store": str(s), "problem": p} for s, p in self.missing.items()],
            "corrected": [{"store": str(s), "problem": p} for s, p in self.corrected.items()],
        }


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one store's fragment."""

    store: int
    problem: str

    def to_json(self) -> dict[str, Any]:
        """``{"store": str, "problem": str}``."""
        return {"store": str(self.store), "problem": self.problem}


@dataclass
class ObjectHealth:
    """The state of one named object's fragments."""

    name: str
    status: str  # healthy | degraded | lost
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """One entry of ``vault verify --json``'s ``objects``."""
        return {
            "name": self.name,
            "status": self.status,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass
class VerifyResult:
    """The state of the vault (or of one name)."""

    objects: list[ObjectHealth]
    unreachable: dict[int, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """The worst object status."""
        return worst([o.status for o in self.objects])

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 damaged but recoverable, 2 something lost."""
        return _RANK[self.status]

    def to_json(self) -> dict[str, Any]:
        """The ``vault verify --json`` document (shape in docs/architecture.md)."""
        return {
            "status": self.status,
            "objects": [o.to_json() for o in self.objects],
            "unreachable": [{"store": str(s), "problem": p} for s, p in self.unreachable.items()],
        }


@dataclass
class RepairResult:
    """Fragments rewritten by repair, and what could not be."""

    repaired: list[Problem] = field(default_factory=list)
    failed: list[ObjectHealth] = field(default_factory=list)
    removed: int = 0  # stale versions and unreadable leftovers cleaned up

    def to_json(self) -> dict[str, Any]:
        """The ``vault repair --json`` document."""
        return {
            "repaired": [p.to_json() for p in self.repaired],
            "failed": [o.to_json() for o in self.failed],
            "removed": self.removed,
        }


@dataclass
class RefreshResult:
    """Objects re-randomised by refresh."""

    refreshed: list[str] = field(default_factory=list)
    generations: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``vault refresh --json`` document."""
        return {
            "refreshed": [{"name": n, "generation": self.generations[n]} for n in self.refreshed]
        }


@dataclass
class RmResult:
    """What rm removed."""

    name: str
    removed: bool
    versions: int

    def to_json(self) -> dict[str, Any]:
        """The ``vault rm --json`` document."""
        return {"name": self.name, "removed": self.removed, "versions": self.versions}

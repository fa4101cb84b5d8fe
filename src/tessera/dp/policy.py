"""A table's privacy policy: exact release, or DP with budgets (serialisable)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from tessera.dp.accounting import epsilon_for_rho, rho_for_epsilon
from tessera.errors import InputError, PolicyError

__all__ = ["DEFAULT_DELTA", "DEFAULT_MIN_GROUP_SIZE", "POLICY_VERSION", "Policy"]

POLICY_VERSION = 1
DEFAULT_DELTA = 1e-6
DEFAULT_MIN_GROUP_SIZE = 5


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number")


@dataclass(frozen=True)
class Policy:
    """Per-table release rules.

    ``mode="none"`` releases exact aggregates (only small groups are suppressed).
    ``mode="dp"`` releases with the distributed discrete Gaussian under zCDP:
    ``total_rho`` is the table's whole budget, ``researcher_rho`` each researcher's share
    of it (None: only the total applies), ``default_epsilon`` what a query spends unless
    it asks for less or more (never above ``max_epsilon``), ``delta`` the delta at which
    zCDP is reported as (epsilon, delta)-DP.  Budgets are kept in rho because zCDP
    composes by addition; epsilons are converted with OpenDP.
    """

    mode: Literal["none", "dp"] = "none"
    total_rho: float | None = None
    researcher_rho: float | None = None
    default_epsilon: float = 1.0
    max_epsilon: float | None = None
    delta: float = DEFAULT_DELTA
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE

    def __post_init__(self) -> None:
        if self.mode not in ("none", "dp"):
            raise ValueError("mode must be 'none' or 'dp'")
        if self.mode == "dp" and self.total_rho is None:
            raise ValueError("a DP policy needs a total budget")
        _positive("total budget", self.total_rho)
        _positive("per-researcher budget", self.researcher_rho)
        _positive("default epsilon", self.default_epsilon)
        _positive("max epsilon", self.max_epsilon)
        if not 0 < self.delta < 1:
            raise ValueError("delta must be in (0, 1)")
        if self.min_group_size < 0:
            raise ValueError("minimum group size must be >= 0")

    @classmethod
    def none(cls, *, min_group_size: int = DEFAULT_MIN_GROUP_SIZE) -> Policy:
        """Exact release (no DP), small groups suppressed."""
        return cls(mode="none", min_group_size=min_group_size)

    @classmethod
    def dp(
        cls,
        *,
        total_epsilon: float | None = None,
        total_rho: float | None = None,
        researcher_epsilon: float | None = None,
        researcher_rho: float | None = None,
        default_epsilon: float = 1.0,
        max_epsilon: float | None = None,
        delta: float = DEFAULT_DELTA,
        min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
    ) -> Policy:
        """A DP policy; each budget is given as epsilon (at ``delta``) or as rho, not both."""
        if (total_epsilon is None) == (total_rho is None):
            raise ValueError("give the total budget as epsilon or as rho (exactly one)")
        if researcher_epsilon is not None and researcher_rho is not None:
            raise ValueError("give the per-researcher budget as epsilon or as rho, not both")
        _positive("total epsilon", total_epsilon)
        _positive("per-researcher epsilon", researcher_epsilon)
        if not 0 < delta < 1:
            raise ValueError("delta must be in (0, 1)")
        if total_epsilon is not None:
            total_rho = rho_for_epsilon(total_epsilon, delta)
        if researcher_epsilon is not None:
            researcher_rho = rho_for_epsilon(researcher_epsilon, delta)
        return cls(
            mode="dp",
            total_rho=total_rho,
            researcher_rho=researcher_rho,
            default_epsilon=default_epsilon,
            max_epsilon=max_epsilon,
            delta=delta,
            min_group_size=min_group_size,
        )

    @property
    def is_private(self) -> bool:
        """True when releases under this policy carry DP."""
        return self.mode == "dp"

    def query_rho(self, epsilon: float | None = None) -> float:
        """The rho one query spends at ``epsilon`` (default: the policy default)."""
        if not self.is_private:
            return 0.0
        eps = self.default_epsilon if epsilon is None else epsilon
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError("epsilon must be a positive number")
        if self.max_epsilon is not None and eps > self.max_epsilon:
            raise PolicyError(
                f"epsilon {eps:g} is above this table's per-query maximum {self.max_epsilon:g}"
            )
        return rho_for_epsilon(eps, self.delta)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with epsilon equivalents for people to read)."""
        doc: dict[str, Any] = {
            "version": POLICY_VERSION,
            "mode": self.mode,
            "min_group_size": self.min_group_size,
        }
        if self.is_private:
            assert self.total_rho is not None
            doc.update(
                {
                    "mechanism": "distributed discrete Gaussian",
                    "accounting": "zCDP",
                    "total_rho": self.total_rho,
                    "total_epsilon": epsilon_for_rho(self.total_rho, self.delta),
                    "researcher_rho": self.researcher_rho,
                    "researcher_epsilon": (
                        None
                        if self.researcher_rho is None
                        else epsilon_for_rho(self.researcher_rho, self.delta)
                    ),
                    "default_epsilon": self.default_epsilon,
                    "max_epsilon": self.max_epsilon,
                    "delta": self.delta,
                }
            )
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Policy:
        """Inverse of :meth:`to_dict`; InputError if the document is not a policy."""
        try:
            if int(doc.get("version", 0)) != POLICY_VERSION:
                raise InputError(f"unsupported policy version {doc.get('version')!r}")
            if doc["mode"] == "none":
                return cls.none(min_group_size=int(doc["min_group_size"]))
            return cls(
                mode="dp",
                total_rho=float(doc["total_rho"]),
                researcher_rho=(
                    None if doc.get("researcher_rho") is None else float(doc["researcher_rho"])
                ),
                default_epsilon=float(doc["default_epsilon"]),
                max_epsilon=None if doc.get("max_epsilon") is None else float(doc["max_epsilon"]),
                delta=float(doc["delta"]),
                min_group_size=int(doc["min_group_size"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a valid privacy policy: {exc}") from None

"""Differential privacy for released aggregates (layer 1; wraps OpenDP).

Custodians add distributed discrete Gaussian noise shares inside the MPC
(:func:`sample_noise_share`), calibrated so the ``n - t`` honest custodians alone give
the promised zCDP guarantee (:func:`plan_release`); the requester turns the revealed
noisy statistics into COUNT/SUM/AVG/VARIANCE/STDDEV with intervals
(:func:`postprocess`); a SQLite :class:`Ledger` keeps policies and budgets.  No OpenDP
type appears in this package's signatures.  See docs/dp.md.
"""

from tessera.dp.accounting import (
    distributed_gaussian_rho as distributed_gaussian_rho,
)
from tessera.dp.accounting import epsilon_for_rho as epsilon_for_rho
from tessera.dp.accounting import rho_for_epsilon as rho_for_epsilon
from tessera.dp.ledger import Balance as Balance
from tessera.dp.ledger import Ledger as Ledger
from tessera.dp.ledger import Reservation as Reservation
from tessera.dp.plan import Aggregate as Aggregate
from tessera.dp.plan import ReleasePlan as ReleasePlan
from tessera.dp.plan import Statistic as Statistic
from tessera.dp.plan import plan_release as plan_release
from tessera.dp.policy import Policy as Policy
from tessera.dp.release import Release as Release
from tessera.dp.release import postprocess as postprocess
from tessera.dp.release import sample_noise_share as sample_noise_share

__all__ = [
    "Aggregate",
    "Balance",
    "Ledger",
    "Policy",
    "Release",
    "ReleasePlan",
    "Reservation",
    "Statistic",
    "distributed_gaussian_rho",
    "epsilon_for_rho",
    "plan_release",
    "postprocess",
    "rho_for_epsilon",
    "sample_noise_share",
]

"""Re-identification risk, anonymisation and the privacy-technology recommender.

* :func:`assess` measures k-anonymity, l-diversity (distinct, entropy, recursive),
  t-closeness (ordered and equal-distance EMD), delta-disclosure, prosecutor /
  journalist / marketer risk (ARX's definitions), sample and population uniqueness
  (Pitman, Zayatz, SNB, Dankar's rule) and flags direct identifiers (HIPAA Safe Harbor).
* :func:`anonymize` generalises and suppresses to meet k / l / t with the least loss.
* :func:`recommend` says which Tessera mechanisms fit a data request, and why.

All metrics come from one grouping of the table (:func:`build_classes`).
"""

from __future__ import annotations

from tessera.risk.anonymize import AnonymizationResult as AnonymizationResult
from tessera.risk.anonymize import Criteria as Criteria
from tessera.risk.anonymize import anonymize as anonymize
from tessera.risk.assess import RiskReport as RiskReport
from tessera.risk.assess import assess as assess
from tessera.risk.classes import ClassTable as ClassTable
from tessera.risk.classes import build_classes as build_classes
from tessera.risk.hierarchy import Hierarchy as Hierarchy
from tessera.risk.hierarchy import parse_hierarchies as parse_hierarchies
from tessera.risk.identifiers import find_identifiers as find_identifiers
from tessera.risk.recommend import Recommendation as Recommendation
from tessera.risk.recommend import Request as Request
from tessera.risk.recommend import RiskSummary as RiskSummary
from tessera.risk.recommend import recommend as recommend
from tessera.risk.tables import read_csv as read_csv
from tessera.risk.uniqueness import estimate_uniqueness as estimate_uniqueness

__all__ = [
    "AnonymizationResult",
    "ClassTable",
    "Criteria",
    "Hierarchy",
    "Recommendation",
    "Request",
    "RiskReport",
    "RiskSummary",
    "anonymize",
    "assess",
    "build_classes",
    "estimate_uniqueness",
    "find_identifiers",
    "parse_hierarchies",
    "read_csv",
    "recommend",
]

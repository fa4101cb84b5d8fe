"""Attack detection over audit events, and sharing what was found.

* :func:`scan` — detection rules for every scenario of issue 9 plus an Isolation Forest
  over per-user activity; each :class:`Alert` has a severity, the events behind it and a
  plain explanation.
* :func:`to_stix` / :func:`validate_stix` — STIX 2.1 bundles (stix2, stix2-validator);
  :func:`push_taxii` (taxii2-client) and :func:`push_misp` (pymisp) share them.
* :mod:`tessera.monitor.simulate` — seeded synthetic traces with attacks injected.

The monitor reads :class:`tessera.core.audit_sink.AuditEvent` records only; the
workflows layer feeds it from the audit logs.
"""

from tessera.monitor.alerts import KINDS, Alert
from tessera.monitor.scan import MonitorSettings, scan
from tessera.monitor.sharing import SharingError, push_misp, push_taxii
from tessera.monitor.stix import to_stix, validate_stix

__all__ = [
    "KINDS",
    "Alert",
    "MonitorSettings",
    "SharingError",
    "push_misp",
    "push_taxii",
    "scan",
    "to_stix",
    "validate_stix",
]

"""The one place that imports OpenDP (lazily), so a missing extra is a clean error.

``opendp.prelude`` is avoided on purpose: it imports OpenDP's scikit-learn extras
(~1.8 s here); the four modules below load in ~0.2 s.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

from tessera.errors import EngineUnavailableError

__all__ = ["opendp"]


@functools.cache
def opendp() -> SimpleNamespace:
    """OpenDP's modules as ``dp.m`` / ``dp.c`` / domains and metrics, ``contrib`` on."""
    try:
        import opendp.combinators as combinators
        import opendp.domains as domains
        import opendp.measurements as measurements
        import opendp.metrics as metrics
        import opendp.mod as mod
    except ImportError as exc:  # pragma: no cover - the extra is installed in dev
        raise EngineUnavailableError(
            "differential privacy needs OpenDP: pip install 'tessera-tde[dp]'"
        ) from exc
    mod.enable_features("contrib")
    return SimpleNamespace(
        m=measurements,
        c=combinators,
        atom_domain=domains.atom_domain,
        vector_domain=domains.vector_domain,
        absolute_distance=metrics.absolute_distance,
        l2_distance=metrics.l2_distance,
        OpenDPException=mod.OpenDPException,
    )

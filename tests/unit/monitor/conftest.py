"""A small seeded trace (every scenario twice) and its scan, shared by the monitor tests."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.monitor.alerts import Alert
from tessera.monitor.scan import MonitorSettings, scan
from tessera.monitor.simulate import Trace, build_trace


@pytest.fixture(scope="session")
def trace() -> Trace:
    return build_trace(np.random.default_rng(11), days=12, users=60, per_scenario=2)


@pytest.fixture(scope="session")
def alerts(trace: Trace) -> list[Alert]:
    return scan(enumerate(trace.events), MonitorSettings())

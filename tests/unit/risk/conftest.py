"""Fixtures for tessera.risk tests."""

from __future__ import annotations

import polars as pl
import pytest
from risk_data import HAND


@pytest.fixture
def hand() -> pl.DataFrame:
    """The six-row table whose metrics are worked out by hand in the tests."""
    return HAND.clone()

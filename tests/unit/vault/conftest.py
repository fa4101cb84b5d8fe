"""Fixtures for the vault's unit tests (helpers live in ``kit.py``)."""

from __future__ import annotations

from .kit import make_vault, memory_url

__all__ = ["make_vault", "memory_url"]

"""Sample events and a fake clock shared by the audit tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tessera.core.audit_sink import AuditEvent


def make_clock() -> Callable[[], datetime]:
    now = [datetime(2026, 3, 1, 8, 0, tzinfo=UTC)]

    def clock() -> datetime:
        now[0] += timedelta(seconds=1)
        return now[0]

    return clock


def sample_events(n: int, offset: int = 0) -> list[AuditEvent]:
    return [
        AuditEvent(
            "query" if i % 3 else "vault.get",
            user=f"user{(i + offset) % 7}",
            address=f"10.0.0.{i % 5}",
            entity=f"obj-{i + offset}",
            entity_type="object",
            detail={"rows": i + offset},
        )
        for i in range(n)
    ]

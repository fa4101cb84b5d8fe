"""The core audit seam: event validation and the simple sinks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tessera.core.audit_sink import (
    Action,
    AuditEvent,
    AuditSink,
    MemoryAuditSink,
    NullAuditSink,
)


def test_memory_sink_keeps_order_and_is_a_sink() -> None:
    sink = MemoryAuditSink()
    assert isinstance(sink, AuditSink)
    assert isinstance(NullAuditSink(), AuditSink)
    a = AuditEvent(Action.LOGIN, user="alice")
    b = AuditEvent(Action.VAULT_GET, user="alice", entity="scan-1", detail={"bytes": 3})
    sink.emit(a)
    sink.emit(b)
    assert sink.events == [a, b]
    assert b.action == "vault.get"


def test_bad_events_are_refused() -> None:
    with pytest.raises(ValueError, match="outcome"):
        AuditEvent("login", outcome="maybe")
    with pytest.raises(ValueError, match="action"):
        AuditEvent("")
    with pytest.raises(ValueError, match="timezone"):
        AuditEvent("login", recorded=datetime(2026, 1, 1))
    assert AuditEvent("login", recorded=datetime(2026, 1, 1, tzinfo=UTC)).recorded

"""Issue #17 (load): secure queries beyond the limit are refused at once with 503 and
Retry-After, metadata is answered while a query runs, what the gateway reads per
request is cached until the files change, and audit events are written in groups."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tessera.core.audit_sink import AuditEvent
from tessera.errors import ConfigError, UsageError
from tessera.server.__main__ import max_queries_of
from tessera.server.app import create_app
from tessera.server.auth import Gate
from tessera.server.cache import Tokens, Watched
from tessera.server.journal import Journal
from tessera.server.queries import QueryPool
from tessera.workflows import audit
from tessera.workflows.users import add_user, remove_user

from .conftest import Site

ANSWER = {"columns": ["n"], "rows": [[42]], "privacy": None}


class HeldQuery:
    """A fake ``run_sql`` that waits on an Event (no nodes, no clock)."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, *args: Any, **kw: Any) -> dict[str, Any]:
        self.started.set()
        if not self.release.wait(60):  # a guard against a hang, not a measurement
            raise RuntimeError("never released")
        return ANSWER


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> HeldQuery:
    fake = HeldQuery()
    monkeypatch.setattr("tessera.workflows.query.run_sql", fake)
    monkeypatch.setattr("tessera.workflows.requests.run_sql", fake)  # the gateway's route
    monkeypatch.setattr(Gate, "signer_of", lambda self, request, user: None)
    return fake


@pytest.fixture
def app(site: Site) -> Iterator[FastAPI]:
    app = create_app(site.home, max_queries=1)
    yield app
    app.state.gate.queries.close()
    app.state.gate.journal.close()


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=60)


async def _held_then_more(
    app: FastAPI, site: Site, held: HeldQuery
) -> tuple[httpx.Response, list[httpx.Response]]:
    """One query held in its worker; meanwhile a second query, the table list and /me."""
    auth = site.auth("researcher")
    async with _client(app) as client:
        first = asyncio.ensure_future(
            client.post("/api/v1/query", json={"sql": "SELECT COUNT(*) FROM t"}, headers=auth)
        )
        await asyncio.to_thread(held.started.wait, 60)
        during = [
            await client.post("/api/v1/query", json={"sql": "SELECT 1 FROM t"}, headers=auth),
            await client.get("/api/v1/tables", headers=auth),
            await client.get("/api/v1/me", headers=auth),
            await client.get("/api/v1/health"),
        ]
        assert not first.done()  # everything above was answered while the query ran
        held.release.set()
        return await first, during


def test_excess_query_is_refused_with_503_and_metadata_is_answered_meanwhile(
    app: FastAPI, site: Site, held: HeldQuery
) -> None:
    first, (refused, tables, me, health) = asyncio.run(_held_then_more(app, site, held))
    assert refused.status_code == 503
    assert refused.json().keys() == {"error", "message"}
    assert refused.json()["error"] == "too_many_queries"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["cache-control"] == "no-store"  # the security headers too
    assert tables.status_code == 200 and tables.json() == []
    assert me.status_code == 200 and me.json()["name"] == "rita"
    assert health.status_code == 200
    assert first.status_code == 200 and first.json() == {**ANSWER, "notes": []}
    assert app.state.gate.queries.running == 0  # the slot is back
    events = [ev for _, ev in audit.gateway_log(site.home).tail(10)]
    refusals = [ev for ev in events if ev.detail.get("error") == "too_many_queries"]
    assert len(refusals) == 1 and refusals[0].outcome == "failure"


def test_a_slot_comes_back_when_the_query_fails() -> None:
    async def run() -> list[str]:
        pool, seen = QueryPool(1), []
        for _ in range(3):
            try:
                await pool.run(lambda: 1 / 0)
            except ZeroDivisionError:
                seen.append("failed")
        seen.append(str(await pool.run(lambda: 7)))
        pool.close()
        return seen

    assert asyncio.run(run()) == ["failed", "failed", "failed", "7"]
    with pytest.raises(UsageError):
        QueryPool(0)


def test_max_queries_from_the_flag_the_toml_or_the_default(site: Site, tmp_path: Path) -> None:
    assert max_queries_of(site.home, None) == 4
    assert max_queries_of(site.home, 2) == 2
    with pytest.raises(UsageError):
        max_queries_of(site.home, 0)
    home = tmp_path / "home"
    home.mkdir()
    text = (site.home / "tessera.toml").read_text()
    (home / "tessera.toml").write_text(text + "\n[gateway]\nmax_queries = 9\n")
    assert max_queries_of(home, None) == 9
    assert max_queries_of(home, 3) == 3  # the flag wins
    (home / "tessera.toml").write_text(text + '\n[gateway]\nmax_queries = "many"\n')
    with pytest.raises(ConfigError):
        max_queries_of(home, None)


def _age(path: Path, seconds: float = 10.0) -> None:
    """Make ``path`` look changed ``seconds`` ago (a fresh change is never trusted)."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def test_a_watched_value_is_read_again_only_after_a_change(tmp_path: Path) -> None:
    path, reads = tmp_path / "f", []
    path.write_text("one")

    def load() -> str:
        reads.append(1)
        return path.read_text()

    watched = Watched([path], load, check_s=0.0)
    assert watched.fresh() is None and watched.refresh() == "one"  # just written: racy
    assert watched.fresh() is None
    _age(path)
    assert watched.refresh() == "one" and watched.fresh() == "one" and len(reads) == 2
    assert watched.fresh() == "one" and len(reads) == 2  # kept: nothing read
    path.write_text("two!")
    assert watched.fresh() is None and watched.refresh() == "two!"


def test_an_accepted_token_is_forgotten_when_its_user_is_removed(site: Site) -> None:
    token = add_user(site.home, "tina", "researcher")
    tokens = Tokens(site.home)
    assert tokens.cached(token) is None  # never seen: ask the file
    _age(tokens.path)
    user = tokens.authenticate(token)
    assert user is not None and user.name == "tina"
    assert tokens.cached(token) == user  # in memory now
    assert tokens.cached(token + "x") is None and tokens.authenticate(token + "x") is None
    assert not any(token in key for key in tokens._known)  # kept by hash, never as is
    remove_user(site.home, "tina")
    assert tokens.cached(token) is None and tokens.authenticate(token) is None


def test_a_removed_users_token_is_refused_on_the_next_request(site: Site) -> None:
    token = add_user(site.home, "ulla", "researcher")
    client = site.client()
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=auth).status_code == 200
    assert client.get("/api/v1/me", headers=auth).status_code == 200
    remove_user(site.home, "ulla")
    assert client.get("/api/v1/me", headers=auth).status_code == 401
    client.app.state.gate.journal.close()


def _event(i: int) -> AuditEvent:
    return AuditEvent("test.journal", user=f"u{i}", client="test", source="gateway")


def test_the_journal_writes_every_event_in_order(site: Site) -> None:
    journal = Journal(site.home)
    futures = [journal.submit(_event(i)) for i in range(50)]
    for future in futures:
        future.result(60)
    journal.close()
    users = [ev.user for _, ev in audit.gateway_log(site.home).tail(50)]
    assert users == [f"u{i}" for i in reversed(range(50))]  # newest first
    with pytest.raises(RuntimeError):
        journal.submit(_event(0))


def test_a_failed_append_fails_every_waiting_request(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def append(self, events: list[AuditEvent]) -> None:
            raise OSError("disk full")

    monkeypatch.setattr(audit, "gateway_log", lambda home: Broken())
    journal = Journal(site.home)
    futures = [journal.submit(_event(i)) for i in range(5)]
    for future in futures:
        with pytest.raises(OSError):
            future.result(60)
    journal.close()

"""An environment with a researcher and an officer, and the gateway app over it (in
process: the routes used here never start custodian nodes)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from tessera.server.app import create_app
from tessera.workflows.environment import init_environment
from tessera.workflows.users import add_user


class Client:
    """A synchronous client of an ASGI app in this process (httpx's ASGI transport)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                return await client.request(method, path, **kw)

        return anyio.run(call)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)


@dataclass
class Site:
    home: Path
    tokens: dict[str, str]

    def client(self, **kw: Any) -> Client:
        return Client(create_app(self.home, **kw))

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("gw") / "home"
    init_environment(home, nodes=3, passphrase=b"unit test passphrase")
    tokens = {
        "researcher": add_user(home, "rita", "researcher"),
        "officer": add_user(home, "oscar", "officer"),
    }
    yield Site(home, tokens)

"""The HE server's application in process: it refuses oversized, malformed and mismatched
input with one-line JSON errors, refuses a bundle with a secret key, and answers jobs.
(tests/integration/test_he_flow.py runs it as its own process.)"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from tessera.he.answers import Answer
from tessera.he.container import digest
from tessera.he.files import Bundle
from tessera.he.jobs import Model
from tessera.server.he_app import Limits, create_he_app

from .conftest import Keys, Table


class Client:
    def __init__(self, limits: Limits, models: dict[str, Model] | None = None) -> None:
        self.app = create_he_app(models or {}, limits)

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://he") as client:
                return await client.request(method, path, **kw)

        return anyio.run(go)


def _refused(response: httpx.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    doc = response.json()
    assert set(doc) == {"error", "message"} and text in doc["message"]
    assert "\n" not in doc["message"]


@pytest.fixture()
def client() -> Client:
    model = Model("m", "linear", ("c0", "c1"), (0.5, -0.25), 2.0)
    return Client(Limits(max_upload=8 << 20, max_store=64 << 20, max_jobs=1), {"m": model})


def test_uploads_and_a_job(client: Client, keys1: Keys, table: Table) -> None:
    bundle = keys1.bundle.to_bytes()
    key = digest(bundle).removeprefix("sha256:")
    assert client.call("HEAD", f"/v1/bundles/{key}").status_code == 404
    assert client.call("PUT", f"/v1/bundles/{key}", content=bundle).status_code == 201
    assert client.call("HEAD", f"/v1/bundles/{key}").status_code == 200
    data = table.data.raw
    dkey = digest(data).removeprefix("sha256:")
    assert client.call("PUT", f"/v1/data/{dkey}", content=data).status_code == 201
    reply = client.call("POST", "/v1/jobs", json={"data": dkey, "job": {"kind": "mean"}})
    assert reply.status_code == 200
    assert Answer.from_bytes(reply.content).outputs == [(f"sum:c{j}", 1) for j in range(4)]
    models = client.call("GET", "/v1/models").json()
    assert models[0]["name"] == "m" and models[0]["digest"].startswith("sha256:")
    wrong = {
        "data": dkey,
        "job": {"kind": "scores", "model": "m", "model_digest": "sha256:" + "0" * 64},
    }
    _refused(client.call("POST", "/v1/jobs", json=wrong), 409, "digest")


def test_malformed_and_oversized_input_is_refused(
    client: Client, keys1: Keys, table: Table
) -> None:
    bundle = keys1.bundle.to_bytes()
    key = digest(bundle).removeprefix("sha256:")
    _refused(client.call("PUT", "/v1/bundles/nothex", content=b"x"), 422, "SHA-256")
    _refused(client.call("PUT", f"/v1/bundles/{'0' * 64}", content=bundle), 400, "does not match")
    junk = b"junk" * 10
    _refused(
        client.call("PUT", f"/v1/bundles/{digest(junk)[7:]}", content=junk),
        400,
        "not a Tessera HE file",
    )
    big = b"\0" * (9 << 20)
    _refused(client.call("PUT", f"/v1/data/{digest(big)[7:]}", content=big), 413, "limit")
    data = table.data.raw
    dkey = digest(data)[7:]
    _refused(client.call("PUT", f"/v1/data/{dkey}", content=data), 409, "upload it first")
    client.call("PUT", f"/v1/bundles/{key}", content=bundle)
    cut = data[:-1]
    _refused(client.call("PUT", f"/v1/data/{digest(cut)[7:]}", content=cut), 400, "truncated")
    _refused(client.call("POST", "/v1/jobs", content=b"{"), 400, "not JSON")
    _refused(client.call("POST", "/v1/jobs", json={"job": {}}), 400, "names no data")
    _refused(
        client.call("POST", "/v1/jobs", json={"data": dkey, "job": {"kind": "x"}}), 400, "job kind"
    )
    _refused(
        client.call("POST", "/v1/jobs", json={"data": dkey, "job": {"kind": "sum"}}),
        404,
        "upload it",
    )
    client.call("PUT", f"/v1/data/{dkey}", content=data)
    missing = {"data": dkey, "job": {"kind": "scores", "model": "nope"}}
    _refused(client.call("POST", "/v1/jobs", json=missing), 404, "no model")
    _refused(
        client.call("POST", "/v1/jobs", json={"data": dkey, "job": {"kind": "imaging"}}),
        400,
        "image",
    )
    _refused(client.call("GET", "/v1/nowhere"), 404, "no such route")


def test_a_bundle_with_a_secret_key_is_refused(client: Client, keys1: Keys) -> None:
    leaky = Bundle(**{**keys1.bundle.__dict__, "public_context": keys1.secret_context, "raw": b""})
    raw = leaky.to_bytes()
    _refused(client.call("PUT", f"/v1/bundles/{digest(raw)[7:]}", content=raw), 400, "secret key")
    assert client.call("HEAD", f"/v1/bundles/{digest(raw)[7:]}").status_code == 404

"""A consortium of three custodians, each on its own host (a network namespace with its
own folder and its own S3 fragment store), set up only through the command line.

Nothing is shared between the hosts but what an operator would hand over: the join
requests go to the founder's machine, the signed manifest and its fingerprint come
back.  Then the vault, a table import, a secure query, a recommendation and a DP
release run across them; node 3 is stopped and replaced by a new node that joins under
a quorum of two stewards; an unpinned node and an unpinned client are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from netns_hosts import Hosts, namespaces

from tessera.config import Environment
from tessera.errors import IntegrityError
from tessera.workflows.nodes import NodeClient
from tessera.workflows.nodes_pki import self_signed_client

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("federation")]

PASSPHRASE = "federation test passphrase"
PORT = 8443
TESSERA = [sys.executable, "-m", "tessera.cli.main"]


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    with namespaces(3) as hosts:
        yield hosts


class Consortium:
    """The processes and folders of the test; every process stopped at the end."""

    def __init__(self, hosts: Hosts, root: Path) -> None:
        self.hosts = hosts
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = {
            **os.environ,
            "TESSERA_PASSPHRASE": PASSPHRASE,
            "TESSERA_PERSON": "alice",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "NO_PROXY": "*",
        }
        self.client = root / "client"

    def cli(self, *args: str, host: int | None = None, ok: bool = True) -> Any:
        cmd = [*TESSERA, *args]
        if host is not None:
            cmd = self.hosts.run(host, *cmd)
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=self.env, timeout=300, check=False
        )
        if ok:
            assert done.returncode == 0, f"{args}: {done.stderr[-1500:]}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def background(self, name: str, host: int, *cmd: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            self.hosts.run(host, *cmd), stdout=log, stderr=subprocess.STDOUT, env=self.env
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def start_node(self, name: str, host: int, config: Path) -> subprocess.Popen[bytes]:
        return self.background(
            name, host, sys.executable, "-m", "tessera.node", "--config", str(config)
        )

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                self.stop(proc)

    def logs(self) -> str:
        out = []
        for name, _ in self.procs:
            text = (self.root / f"{name}.log").read_text(errors="replace")
            out.append(f"--- {name}:\n{text[-1500:]}")
        return "\n".join(out)

    def wait_ready(self, node_ids: list[int]) -> None:
        env = Environment.load(self.client)
        deadline = time.monotonic() + 60
        for node in env.nodes:
            if node.id not in node_ids:
                continue
            client = NodeClient(env, node.id, node.host, node.port)
            try:
                while True:
                    try:
                        if client.request("GET", "/v1/ready")["ready"]:
                            break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                    time.sleep(0.3)
            finally:
                client.close()


@pytest.fixture
def consortium(hosts: Hosts, tmp_path: Path) -> Iterator[Consortium]:
    c = Consortium(hosts, tmp_path)
    try:
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.close()


def _moto(c: Consortium, host: int) -> None:
    addr = c.hosts.addresses[host - 1]
    c.background(f"s3-{host}", host, sys.executable, "-m", "moto.server", "-H", addr, "-p", "9000")
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://{addr}:9000/", timeout=1.0, trust_env=False)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _bucket(c: Consortium, host: int, bucket: str) -> None:
    import s3fs

    addr = c.hosts.addresses[host - 1]
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        endpoint_url=f"http://{addr}:9000",
        client_kwargs={"region_name": "eu-west-1"},
        skip_instance_cache=True,
    )
    fs.mkdir(bucket)


def _node_init(c: Consortium, host: int, folder: str, node_id: int, port: int) -> Path:
    """`tessera node init` inside ``host``'s namespace; the join request, handed over."""
    addr = c.hosts.addresses[host - 1]
    bucket = f"fragments-{folder}"
    _bucket(c, host, bucket)
    config = c.root / folder / "node.toml"
    made = c.cli(
        "node", "init", "--config", str(config), "--id", str(node_id),
        "--address", f"{addr}:{port}", "--name", folder, "--log", "json",
        "--store", f"s3://{bucket}", "--store-option", f"endpoint_url=http://{addr}:9000",
        host=host,
    )  # fmt: skip
    assert "fingerprint:" in made.stdout
    assert (c.root / folder / "tls" / "node.key").stat().st_mode & 0o077 == 0
    handed = c.root / "inbox" / f"{folder}.json"
    handed.parent.mkdir(exist_ok=True)
    shutil.copy(c.root / folder / "join-request.json", handed)  # out of band
    return config


def _join(c: Consortium, host: int, config: Path, manifest: Path) -> None:
    fingerprint = c.json("consortium", "show", str(manifest))["fingerprint"]
    handed = config.parent / "manifest-in.json"
    shutil.copy(manifest, handed)  # out of band, with the fingerprint read aloud
    wrong = c.cli(
        "node", "join", str(handed), "--config", str(config), "--fingerprint", "0" * 24,
        host=host, ok=False,
    )  # fmt: skip
    assert wrong.returncode == 1 and "fingerprint differs" in wrong.stderr
    c.cli(
        "node", "join", str(handed), "--config", str(config),
        "--fingerprint", fingerprint[:24], host=host,
    )  # fmt: skip


def test_three_hospitals_on_three_hosts(consortium: Consortium) -> None:
    c = consortium
    for host in (1, 2, 3):
        _moto(c, host)
    configs = {i: _node_init(c, i, f"hospital-{i}", i, PORT) for i in (1, 2, 3)}
    requests = [
        a for i in (1, 2, 3) for a in ("--node", str(c.root / "inbox" / f"hospital-{i}.json"))
    ]
    c.cli("init", str(c.client), "--person", "alice", *requests)
    manifest = c.client / "consortium.json"
    for i in (1, 2, 3):
        _join(c, i, configs[i], manifest)
    nodes = {i: c.start_node(f"node-{i}", i, configs[i]) for i in (1, 2, 3)}
    c.wait_ready([1, 2, 3])
    home = ("--home", str(c.client))

    # the node logs JSON lines on stdout
    first = (c.root / "node-1.log").read_text().splitlines()[0]
    assert json.loads(first)["message"].startswith("node 1 serving consortium")

    # vault: fragments land in each host's own store
    scan = c.root / "scan.bin"
    scan.write_bytes(os.urandom(300_000))
    c.cli("vault", "put", str(scan), "--name", "scan", *home)
    c.cli("vault", "get", "scan", "--out", str(c.root / "scan.out"), *home)
    assert (c.root / "scan.out").read_bytes() == scan.read_bytes()

    # a table from three hospitals, a secure query, a recommendation and a DP release
    cohort = c.root / "cohort.csv"
    rows = [(20 + (i * 7) % 60, f"h{i % 3}") for i in range(90)]
    cohort.write_text("age,hospital\n" + "".join(f"{a},{h}\n" for a, h in rows))
    c.cli("table", "import", str(cohort), "--name", "cohort", "--origin-column", "hospital", *home)
    got = c.json(
        "query", "SELECT hospital, COUNT(*), SUM(age) FROM cohort GROUP BY hospital", *home
    )
    want = {
        h: [sum(1 for _, x in rows if x == h), sum(a for a, x in rows if x == h)]
        for h in ("h0", "h1", "h2")
    }
    assert {r[0]: r[1:] for r in got["rows"]} == want

    from tessera.samples.hiv import write_cohort

    hiv = c.root / "hiv"
    write_cohort(hiv, 120, hospitals=3, seed=5)
    for h in (1, 2, 3):
        c.cli(
            "table", "import", str(hiv / f"hiv-{h}.csv"), "--name", "hiv",
            "--hospital", f"h{h}", "--schema", str(hiv / "hiv.schema.yaml"), *home,
        )  # fmt: skip
    rec = c.json(
        "recommend", "--table", "hiv", "--patient", str(hiv / "patient.json"), "--k", "15", *home
    )
    assert rec["k"] == 15 and rec["treatments"]

    c.cli(
        "budget",
        "policy",
        "cohort",
        "--mode",
        "dp",
        "--total-epsilon",
        "2",
        "--default-epsilon",
        "1",
        "--confirm-bounds",
        *home,
    )
    dp = c.json("query", "SELECT COUNT(*) FROM cohort", "--epsilon", "1", *home)
    assert dp["privacy"] is not None and abs(dp["rows"][0][0] - 90) < 60

    # node 3 is replaced: a new key, a new folder, a new store, under two stewards
    c.cli("person", "add", "bob", "--role", "steward", "--as", "alice", *home)
    c.stop(nodes[3])
    config4 = _node_init(c, 3, "hospital-3b", 3, PORT + 1)
    c.cli(
        "consortium", "add-node", str(c.root / "inbox" / "hospital-3b.json"), "--as", "alice", *home
    )
    proposal = c.client / "consortium-next.json"
    alone = c.cli("consortium", "push", str(proposal), *home, ok=False)
    assert alone.returncode == 1 and "needs 2 signature" in alone.stderr
    c.cli("consortium", "sign", str(proposal), "--as", "bob", *home)
    c.cli("consortium", "push", str(proposal), *home)
    _join(c, 3, config4, c.client / "consortium.json")
    c.start_node("node-3b", 3, config4)
    c.wait_ready([1, 2, 3])
    assert c.json("consortium", "show", *home)["serial"] == 2

    c.cli("vault", "get", "scan", "--out", str(c.root / "scan.2"), *home)  # degraded, still served
    assert (c.root / "scan.2").read_bytes() == scan.read_bytes()
    c.cli("vault", "repair", "scan", *home)
    assert c.json("vault", "verify", "scan", *home)["status"] == "healthy"
    c.cli("table", "import", str(cohort), "--name", "cohort2", "--origin-column", "hospital", *home)
    again = c.json(
        "query", "SELECT hospital, COUNT(*), SUM(age) FROM cohort2 GROUP BY hospital", *home
    )
    assert {r[0]: r[1:] for r in again["rows"]} == want

    # a researcher's own machine joins: her key and her TLS key stay on her machine
    rita = c.root / "rita"
    fp = c.json("consortium", "show", *home)["fingerprint"]
    shutil.copy(c.client / "consortium.json", c.root / "inbox" / "manifest-for-rita.json")
    c.cli("init", str(rita), "--person", "rita", "--fingerprint", fp[:24],
          "--consortium", str(c.root / "inbox" / "manifest-for-rita.json"))  # fmt: skip
    sql = ("query", "SELECT COUNT(*) FROM cohort2", "--as", "rita", "--home", str(rita), "--json")
    early = c.cli(*sql, ok=False)  # the nodes do not pin her machine yet
    assert early.returncode == 1 and "tessera: error:" in early.stderr
    shutil.copy(rita / "join-request.json", c.root / "inbox" / "rita.json")
    c.cli("consortium", "add-client", str(c.root / "inbox" / "rita.json"),
          "--role", "researcher", "--as", "alice", *home)  # fmt: skip
    c.cli("consortium", "sign", str(proposal), "--as", "bob", *home)
    c.cli("consortium", "push", str(proposal), *home)
    c.wait_ready([1, 2, 3])
    assert json.loads(c.cli(*sql).stdout)["rows"] == [[len(rows)]]
    assert not (c.client / "keys" / "rita.key").exists()

    # the replaced node's key is no longer pinned: the client refuses it
    old = c.start_node("node-3-old", 3, configs[3])
    env = Environment.load(c.client)
    deadline = time.monotonic() + 30
    while True:
        probe = NodeClient(env, 3, c.hosts.addresses[2], PORT)
        try:
            with pytest.raises(IntegrityError, match="does not pin"):
                probe.request("GET", "/v1/health")
            break
        except Exception:
            if time.monotonic() > deadline or old.poll() is not None:
                raise
            time.sleep(0.3)
        finally:
            probe.close()

    # a client machine whose certificate the manifest does not pin is refused by the nodes
    rogue = c.root / "rogue"
    self_signed_client(rogue, "mallory")
    node1 = env.nodes[0]
    ctx = ssl.create_default_context(cafile=str(c.client / "pki" / "ca.crt"))
    ctx.load_cert_chain(str(rogue / "client.crt"), str(rogue / "client.key"))
    with (
        pytest.raises(httpx.HTTPError),
        httpx.Client(verify=ctx, timeout=5, trust_env=False) as http,
    ):
        http.get(f"https://{node1.host}:{node1.port}/v1/health").raise_for_status()
    ctx = ssl.create_default_context(cafile=str(c.client / "pki" / "ca.crt"))
    ctx.load_cert_chain(str(c.client / "pki" / "client.crt"), str(c.client / "pki" / "client.key"))
    with httpx.Client(verify=ctx, timeout=5.0, trust_env=False) as http:  # the pinned one is let in
        assert http.get(f"https://{node1.host}:{node1.port}/v1/health").json()["node"] == 1

"""Talk to the custodian nodes: start local ones, upload shares, run signed MPC jobs.

In the embedded default every node runs on loopback; :func:`ensure_nodes` starts the
ones that are not answering (``python -m tessera.node``), on their configured port or a
free one when that is taken, and finds them again through ``HOME/run/node-I.json``.
All traffic is HTTPS with client certificates from the environment's CA.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from tessera.config import Environment
from tessera.core.prime import InconsistentSharesError, reconstruct_array, to_signed
from tessera.errors import (
    BackendError,
    ConfigError,
    IntegrityError,
    JobAbortedError,
    NodeBusyError,
    OutputHeldError,
    StorageUnavailableError,
    TesseraError,
)
from tessera.keys.documents import SignedDocument
from tessera.mpc.jobs import result_shares
from tessera.version import PROTOCOL_VERSION, __version__
from tessera.workflows.custodian import JOB_CONTEXT

if TYPE_CHECKING:  # people imports this module's broadcast
    from tessera.workflows.people import Signer

__all__ = [
    "NodeClient",
    "broadcast",
    "each_node",
    "ensure_nodes",
    "node_status",
    "run_job",
    "sign_job",
    "stop_nodes",
]

_LOCAL = {"127.0.0.1", "localhost", "::1"}
#: Nodes that commands start by themselves exit after this long without a request (and
#: at once when their environment folder is removed); the next command starts them again.
#: ``[node] idle_exit = SECONDS`` in tessera.toml or $TESSERA_NODE_IDLE_EXIT changes it.
IDLE_EXIT_S = 900
#: How long a job is sent again while a custodian answers that it runs its limit of jobs.
BUSY_WAIT_S = 300.0
_JITTER = secrets.SystemRandom()
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # nodes this process started (reaped on stop)
_ERRORS: dict[str, type[TesseraError]] = {}


def _error_class(code: str) -> type[TesseraError]:
    if not _ERRORS:
        import tessera.errors as errs

        for obj in vars(errs).values():
            if isinstance(obj, type) and issubclass(obj, TesseraError):
                _ERRORS[obj.code] = obj
    return _ERRORS.get(code, BackendError)


class NodeClient:
    """HTTPS client for one node (mutual TLS with the environment's client certificate)."""

    def __init__(
        self, env: Environment, node_id: int, host: str, port: int, *, cafile: Path | None = None
    ) -> None:
        pki = env.home / "pki"
        ctx = ssl.create_default_context(cafile=str(cafile or pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
        self.node_id = node_id
        self.host = host
        self.port = port
        self.base = f"https://{host}:{port}"
        self.http = httpx.Client(
            base_url=self.base, verify=ctx, timeout=httpx.Timeout(900.0, connect=5.0)
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def _check(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            try:
                doc = resp.json()
                cls = _error_class(str(doc.get("error")))
                message = str(doc.get("message", "failed"))
            except ValueError:
                cls, message = BackendError, f"HTTP {resp.status_code}"
            raise cls(f"node {self.node_id}: {message}")
        return resp.json()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; node errors come back as the matching TesseraError."""
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise IntegrityError(
                    f"node {self.node_id} at {self.host}:{self.port} presented a certificate "
                    "this environment does not pin (TLS verification failed): refused"
                ) from None
            raise StorageUnavailableError(
                f"node {self.node_id} at {self.host}:{self.port} is unreachable "
                f"({exc.__class__.__name__})"
            ) from None
        return self._check(resp)

    def healthy(self) -> bool:
        """Whether the node answers its health check."""
        try:
            resp = self.http.get("/v1/health", timeout=3.0)
        except httpx.HTTPError:
            return False
        if resp.status_code != 200:
            return False
        try:
            doc = resp.json()
        except ValueError:
            return False
        protocol = doc.get("protocol", PROTOCOL_VERSION)
        if protocol != PROTOCOL_VERSION:
            raise ConfigError(
                f"node {self.node_id} speaks protocol {str(protocol)[:12]} (tessera "
                f"{str(doc.get('version'))[:20]}); this client speaks {PROTOCOL_VERSION} "
                f"(tessera {__version__}): upgrade the older side"
            )
        return bool(doc.get("node") == self.node_id)

    def append(self, table: str, chunk: str, manifest: dict[str, Any], data: bytes) -> None:
        """Upload one chunk of this node's shares."""
        header = base64.urlsafe_b64encode(json.dumps(manifest).encode()).decode()
        self.request(
            "PUT",
            f"/v1/tables/{table}/chunks/{chunk}",
            content=data,
            headers={"X-Tessera-Manifest": header, "Content-Type": "application/octet-stream"},
        )


def _run_file(env: Environment, node_id: int) -> Path:
    return env.home / "run" / f"node-{node_id}.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _known(env: Environment, node_id: int) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = json.loads(_run_file(env, node_id).read_text())
    except (OSError, ValueError):
        return None
    return info


def ensure_nodes(
    env: Environment, *, start: bool = True, timeout: float = 30.0
) -> dict[int, NodeClient]:
    """A client per node, starting local nodes that do not answer (embedded default)."""
    clients: dict[int, NodeClient] = {}
    try:
        return _ensure(env, clients, start=start, timeout=timeout)
    except BaseException:
        # Clients already connected to healthy nodes must not leak their TLS sockets.
        for client in clients.values():
            client.close()
        raise


def _ensure(
    env: Environment, clients: dict[int, NodeClient], *, start: bool, timeout: float
) -> dict[int, NodeClient]:
    to_start = []
    for node in env.nodes:
        info = _known(env, node.id)
        if info is not None:
            client = NodeClient(env, node.id, node.host, int(info["port"]))
            pid = int(info.get("pid", 0))
            # a live local node process we know is trusted without a round trip: the
            # job's first request fails cleanly if it stopped answering
            if (node.host in _LOCAL and pid > 0 and _pid_alive(pid)) or client.healthy():
                clients[node.id] = client
                continue
            client.close()
        client = NodeClient(env, node.id, node.host, node.port)
        if node.port and info is None and client.healthy():
            clients[node.id] = client
            continue
        client.close()
        if not start or node.host not in _LOCAL or "consortium" in env.extra:
            raise StorageUnavailableError(
                f"node {node.id} at {node.host}:{node.port} is not running"
            )
        to_start.append(node.id)
    for node_id in to_start:
        start_node(env, node_id)
    deadline = time.monotonic() + timeout
    for node_id in to_start:
        node = next(n for n in env.nodes if n.id == node_id)
        while True:
            info = _known(env, node_id)
            if info is not None:
                client = NodeClient(env, node_id, node.host, int(info["port"]))
                if client.healthy():
                    clients[node_id] = client
                    break
                client.close()
            if time.monotonic() > deadline:
                log = env.home / "run" / f"node-{node_id}.log"
                tail = (
                    log.read_text(errors="replace").strip().splitlines()[-1:]
                    if log.exists()
                    else []
                )
                raise StorageUnavailableError(
                    f"node {node_id} did not start" + (f": {tail[0][:200]}" if tail else "")
                )
            time.sleep(0.1)
    return dict(sorted(clients.items()))


def start_node(env: Environment, node_id: int, *, enforce: bool = True) -> int:
    """Start node ``node_id`` as a background process; its pid.

    ``enforce=False`` starts a node that runs every signed job without checking the
    tables' policies (it plays a custodian that stopped enforcing; tests only).
    """
    run_dir = env.home / "run"
    run_dir.mkdir(exist_ok=True)
    stale = _run_file(env, node_id)
    if stale.exists():
        stale.unlink()
    with open(run_dir / f"node-{node_id}.log", "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tessera.node",
                "--home",
                str(env.home),
                "--id",
                str(node_id),
                "--any-port",
                "--idle-exit",
                str(idle_exit_s(env)),
                *([] if enforce else ["--no-policy-checks"]),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc.pid


def idle_exit_s(env: Environment) -> float:
    """Seconds without a request after which a node started by a command exits (0: never)."""
    raw: object = os.environ.get("TESSERA_NODE_IDLE_EXIT") or env.extra.get("node", {}).get(
        "idle_exit", IDLE_EXIT_S
    )
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = -1.0
    if not 0 <= value < 1e9:
        raise ConfigError(f"node idle_exit must be a number of seconds >= 0, not {str(raw)[:40]!r}")
    return value


def node_status(env: Environment) -> list[dict[str, Any]]:
    """Per node: id, host, port, pid and whether it answers."""
    out = []
    for node in env.nodes:
        info = _known(env, node.id)
        port = int(info["port"]) if info else node.port
        client = NodeClient(env, node.id, node.host, port)
        try:
            ok = client.healthy()
        finally:
            client.close()
        out.append(
            {
                "id": node.id,
                "host": node.host,
                "port": port,
                "pid": info.get("pid") if info else None,
                "running": ok,
            }
        )
    return out


def stop_nodes(env: Environment, *, timeout: float = 10.0) -> list[int]:
    """Stop the local nodes this environment started; the ids stopped.

    Every node is asked to stop first, then each is waited for (``timeout`` seconds in
    all, then killed): they shut down side by side, not one after the other.
    """
    stopping: list[tuple[int, subprocess.Popen[bytes] | None, int]] = []
    for node in env.nodes:
        info = _known(env, node.id)
        if info is None:
            continue
        pid = int(info.get("pid", 0))
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.terminate()
            stopping.append((node.id, child, pid))
        elif pid > 0 and _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            stopping.append((node.id, None, pid))
        else:
            _run_file(env, node.id).unlink(missing_ok=True)
    deadline = time.monotonic() + timeout
    for node_id, child, pid in stopping:
        if child is not None:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        else:
            while _pid_alive(pid) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.05)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        _run_file(env, node_id).unlink(missing_ok=True)
    return [node_id for node_id, _, _ in stopping]


def sign_job(job: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """The signed envelope for ``job``, signed by ``signer``."""
    if job.get("requester") != signer.name:
        job = {**job, "requester": signer.name}
    if "protocol" not in job:
        job = {**job, "protocol": PROTOCOL_VERSION}
    document = signer.sign(SignedDocument(job), context=JOB_CONTEXT)
    doc = document.to_dict()
    return {"job": doc["body"], "signatures": doc["signatures"]}


def each_node(
    clients: Mapping[int, NodeClient], call: Callable[[int, NodeClient], Any]
) -> tuple[dict[int, Any], dict[int, TesseraError]]:
    """``call(node id, client)`` for every node in parallel: answers and errors by id."""
    results: dict[int, Any] = {}
    errors: dict[int, TesseraError] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(clients))) as pool:
        futures = {i: pool.submit(call, i, c) for i, c in clients.items()}
        for i, fut in futures.items():
            try:
                results[i] = fut.result()
            except TesseraError as exc:
                errors[i] = exc
    return results, errors


def _gather(
    clients: dict[int, NodeClient], method: str, path: str, **kwargs: Any
) -> tuple[dict[int, Any], dict[int, TesseraError]]:
    """One request to every node in parallel: answers and errors by node id."""
    return each_node(clients, lambda _, c: c.request(method, path, **kwargs))


def _raise_refusals(errors: dict[int, TesseraError], total: int) -> None:
    """One error for what the nodes refused (every node's reason when they agree)."""
    if not errors:
        return

    # a custodian's own refusal explains more than a node that went away, that more than
    # a failure (often the others' parties losing it), a failure more than an abort
    def rank(i: int) -> tuple[int, int]:
        e = errors[i]
        if isinstance(e, JobAbortedError):
            return (3, i)
        if isinstance(e, StorageUnavailableError):
            return (1, i)
        return (2 if isinstance(e, BackendError) else 0, i)

    first = errors[min(errors, key=rank)]
    refusals = {i: e for i, e in errors.items() if not isinstance(e, BackendError)} or errors
    reasons = {str(e).split(": ", 1)[-1] for e in refusals.values()}
    if len(refusals) > 1 and len(reasons) == 1:
        count = len(refusals)
        who = "every custodian" if count == total else f"{count} of {total} custodians"
        raise type(first)(f"refused by {who}: {reasons.pop()}")
    raise first


def broadcast(env: Environment, method: str, path: str, **kwargs: Any) -> dict[int, Any]:
    """The same request to every node; their answers by node id (the first error raised)."""
    clients = ensure_nodes(env)
    try:
        results, errors = _gather(clients, method, path, **kwargs)
    finally:
        for c in clients.values():
            c.close()
    _raise_refusals(errors, len(clients))
    return results


def _run_everywhere(
    clients: dict[int, NodeClient], envelope: dict[str, Any]
) -> tuple[dict[int, Any], dict[int, TesseraError]]:
    """Post the job to every node; as soon as one refuses, abort it on the others."""
    job_id = str(envelope["job"]["job_id"])
    results: dict[int, Any] = {}
    errors: dict[int, TesseraError] = {}
    with ThreadPoolExecutor(max_workers=2 * len(clients)) as pool:
        futures = {
            pool.submit(c.request, "POST", "/v1/jobs", json=envelope): i for i, c in clients.items()
        }
        aborted = False
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except TesseraError as exc:
                errors[i] = exc
                if not aborted:
                    aborted = True
                    for j, c in clients.items():
                        if j != i:
                            pool.submit(_abort, c, job_id)
    return results, errors


def _abort(client: NodeClient, job_id: str) -> None:
    with contextlib.suppress(TesseraError):
        client.request("POST", f"/v1/jobs/{job_id}/abort")


def run_job(
    env: Environment,
    job_type: str,
    inputs: Sequence[dict[str, Any]],
    params: dict[str, Any],
    *,
    prime: int,
    signer: Signer,
    noise: dict[str, Any] | None = None,
    approval: dict[str, Any] | None = None,
) -> tuple[list[int], list[dict[str, Any]]]:
    """Run one MPC job on every node; the reconstructed (signed) outputs and node metas.

    ``approval``: the signed request and its stewards' decisions, for tables whose policy
    requires approval.  When the custodians hold the release back for its steward (a
    disclosure check failed), OutputHeldError says why (its ``job_id`` names it).

    ``signer`` (a :class:`tessera.workflows.people.Signer`) signs the job; every node
    checks it against its own roster and policies.  When any node refuses, the others
    are told to abort their party at once.

    Each node returns only its own re-randomised share; the shares are reconstructed here
    with a check that all of them lie on one polynomial of degree t.
    """
    body: dict[str, Any] = {"type": job_type, "inputs": list(inputs), "noise": noise}
    body["params"] = params
    if approval is not None:
        body["approval"] = approval
    clients = ensure_nodes(env)
    try:
        job, results = _run_until_admitted(env, clients, body, signer)
    finally:
        for c in clients.values():
            c.close()
    _raise_held(results, str(job["job_id"]))
    shares = {}
    lengths = set()
    for i, res in results.items():
        arr = np.array(result_shares(res, i - 1), dtype=object)
        lengths.add(arr.shape)
        shares[i - 1] = arr
    if len(lengths) != 1:
        raise IntegrityError("nodes returned results of different lengths")
    try:
        values = reconstruct_array(shares, t=env.mpc_threshold, p=prime, check=True)
    except InconsistentSharesError:
        raise IntegrityError("the nodes' result shares disagree") from None
    return [int(v) for v in to_signed(values, prime)], [results[i] for i in sorted(results)]


def _run_until_admitted(
    env: Environment, clients: dict[int, NodeClient], body: dict[str, Any], signer: Signer
) -> tuple[dict[str, Any], dict[int, Any]]:
    """Sign ``body`` as a new job and run it on every node; while a custodian is at its
    job limit (NodeBusyError, nothing charged), run it again as a fresh job after a
    random pause, for up to :data:`BUSY_WAIT_S`.  The job and the nodes' answers."""
    deadline = time.monotonic() + BUSY_WAIT_S
    pause = 0.1
    while True:
        with ThreadPoolExecutor(max_workers=len(clients)) as pool:  # TLS set-ups in parallel
            asked = {i: pool.submit(c.request, "GET", "/v1/mpc-port") for i, c in clients.items()}
            ports = {i: int(f.result()["port"]) for i, f in asked.items()}
        job = {
            "version": 1,
            "job_id": secrets.token_hex(16),
            "requester": signer.name,
            "issued_at": int(time.time()),
            "parties": [[n.host, ports[n.id]] for n in sorted(env.nodes, key=lambda n: n.id)],
            **body,
        }
        results, errors = _run_everywhere(clients, sign_job(job, signer))
        busy = any(isinstance(e, NodeBusyError) for e in errors.values())
        # the others' parties were aborted (or lost the busy one's): nothing was charged
        if (
            not busy
            or time.monotonic() + pause > deadline
            or not all(
                isinstance(e, BackendError) and not isinstance(e, StorageUnavailableError)
                for e in errors.values()
            )
        ):
            _raise_refusals(errors, len(clients))
            return job, results
        time.sleep(_JITTER.uniform(pause / 2, pause))
        pause = min(pause * 2, 3.0)


def _raise_held(results: dict[int, Any], job_id: str) -> None:
    """OutputHeldError when any custodian held the release back (fail closed: the
    shares the others returned are not enough, or not meant, to reconstruct)."""
    held = {i: r for i, r in results.items() if isinstance(r, dict) and r.get("held") is True}
    if not held:
        return
    reasons: list[str] = []
    for answer in held.values():
        for line in answer.get("reasons") or []:
            if isinstance(line, str) and line not in reasons:
                reasons.append(line[:300])
    raise OutputHeldError(
        f"held for the steward's review by {len(held)} of {len(results)} custodians: "
        + ("; ".join(reasons) or "a disclosure check failed"),
        job_id=job_id,
        reasons=tuple(reasons),
    )

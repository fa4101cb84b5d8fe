"""The service and deployment files under deploy/, checked by the tools of their fields.

* ``compose.yaml``: the official Compose Specification schema (compose-spec, Apache-2.0),
  as check-jsonschema ships it with its licence (its ``vendor.compose-spec``), so no copy
  of it lives in this repository; validated with jsonschema in this process.
* the Helm chart: Helm's own ``lint`` (strict) and template renderer.  Neither Debian 12
  nor PyPI has a helm binary for Linux, so Helm v4's Go SDK is used as a library
  (helm-python-sdk, Apache-2.0; loaded in a child process, so that its Go runtime never
  runs inside the test process).  Every rendered manifest is then checked against the
  Kubernetes API's own JSON schemas, strictly (unknown fields refused), for the oldest
  and the newest Kubernetes the chart supports (kubernetes-validate, Apache-2.0).
* the systemd unit: ``systemd-analyze verify`` (any warning fails), and the sysusers file
  with ``systemd-sysusers --dry-run`` on an empty root.
* the Containerfiles: BuildKit's own parser (dockerfile, MIT); the HEALTHCHECK commands
  are run against a real HTTPS server on loopback.

Each check is also shown to refuse a broken file.  Across files: one node.toml format
(the keys of deploy/node.example.toml), one port, one data folder, one version.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import http.server
import json
import shutil
import ssl
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tessera.config import NodeSettings
from tessera.errors import ConfigError
from tessera.version import __version__
from tessera.workflows.nodes_pki import self_signed_node

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "tessera-node"
BIN = Path(sys.executable).parent
# node.toml as tessera.config.NodeSettings reads it (idle_exit and max_jobs are optional).
NODE_KEYS = {"id", "listen", "address", "data", "tls_cert", "tls_key", "consortium", "log"}
NODE_START = ["node", "start", "--config", "/etc/tessera/node.toml"]
PROBE = "/usr/local/lib/tessera/node-probe.py"
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.utils.latest_version())
FINGERPRINT = "9501E616208E80826968"  # what the members read out (20 hex digits)


def _node_example() -> dict[str, Any]:
    doc = tomllib.loads((DEPLOY / "node.example.toml").read_text())
    assert set(doc) == {"node"}
    return dict(doc["node"])


def _port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def _settings(text: str, folder: Path) -> NodeSettings:
    """The node's own reading of a node.toml (what `tessera node start --config` does)."""
    path = folder / "node.toml"
    path.write_text(text)
    return NodeSettings.load(path)


def test_node_config_example_is_what_the_node_reads(tmp_path: Path) -> None:
    node = _node_example()
    assert set(node) == NODE_KEYS
    settings = _settings((DEPLOY / "node.example.toml").read_text(), tmp_path)
    assert settings.listen == ("0.0.0.0", 47101) and settings.log == "json"
    assert settings.data == Path("/var/lib/tessera")
    # The node writes the installed manifest: it lives in the data folder, the one
    # folder the service may write.
    assert settings.consortium.parent == settings.data
    assert settings.tls_key.parent == settings.tls_cert.parent == Path("/etc/tessera/tls")


def test_max_jobs_is_read_written_back_and_checked(tmp_path: Path) -> None:
    text = (DEPLOY / "node.example.toml").read_text()
    assert _settings(text, tmp_path).max_jobs is None  # twice the cores, at least 4
    settings = _settings(text + "max_jobs = 12\n", tmp_path)
    assert settings.max_jobs == 12
    assert settings.to_toml()["node"]["max_jobs"] == 12
    for bad in ("0", "2.5", '"many"', "5000"):
        with pytest.raises(ConfigError, match=r"\[node\] max_jobs must be a whole number"):
            _settings(text + f"max_jobs = {bad}\n", tmp_path)


# -- compose ---------------------------------------------------------------------------


@functools.cache
def _compose_schema() -> Any:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    assert (vendor / "licenses" / "LICENSE.compose-spec").is_file()
    schema = json.loads((vendor / "compose-spec.json").read_text())
    assert schema["title"] == "Compose Specification"
    kind = jsonschema.validators.validator_for(schema)
    kind.check_schema(schema)
    return kind(schema, format_checker=kind.FORMAT_CHECKER)


def _compose_errors(text: str) -> list[str]:
    return [error.message for error in _compose_schema().iter_errors(yaml.safe_load(text))]


def test_compose_file_matches_the_compose_specification() -> None:
    assert _compose_errors((DEPLOY / "compose.yaml").read_text()) == []


def test_compose_schema_check_refuses_a_misspelt_key() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    errors = _compose_errors(text.replace("    cap_drop:\n", "    cap_dorp:\n", 1))
    assert len(errors) == 1 and "cap_dorp" in errors[0]


def _volumes_of(service: dict[str, Any]) -> dict[str, str]:
    """target -> named volume; a bind mount (a host path) fails the test."""
    found = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        assert not source.startswith(("/", ".", "~")), f"bind mount {entry}"
        found[target] = source
    return found


def test_compose_runs_three_custodians_and_a_gateway_sharing_no_volume() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    nodes = {n: s for n, s in services.items() if s["build"]["dockerfile"].endswith(".node")}
    assert sorted(nodes) == ["custodian-1", "custodian-2", "custodian-3"]
    assert services["gateway"]["build"]["dockerfile"] == "deploy/Containerfile.gateway"
    assert set(services) == {*nodes, "gateway"}
    data = _node_example()["data"]
    used: dict[str, str] = {}
    for name, service in services.items():
        volumes = _volumes_of(service)
        assert set(volumes) == {"/etc/tessera", "/var/lib/tessera"}, name
        assert data in volumes
        for volume in volumes.values():
            assert volume not in used, f"{volume} shared by {used.get(volume)} and {name}"
            used[volume] = name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
    assert set(doc["volumes"]) == set(used)
    for name, service in nodes.items():
        assert service["command"] == NODE_START, name
        assert "ports" not in service  # reached on the consortium network only
    gateway = services["gateway"]
    assert gateway["ports"] == ["8470:8470"]
    assert {n: d["condition"] for n, d in gateway["depends_on"].items()} == dict.fromkeys(
        nodes, "service_healthy"
    )


# -- systemd ---------------------------------------------------------------------------


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (a key may repeat, as systemd allows)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, line
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _verifiable(tmp_path: Path, text: str) -> Path:
    """The unit with its ExecStart pointed at this test's own ``tessera`` command: verify
    checks that the program exists, and /opt/tessera is where the unit's comment installs
    it, not here."""
    installed = "/opt/tessera/bin/tessera"
    assert text.count(f"ExecStart={installed} ") == 1
    unit = tmp_path / "tessera-node.service"
    unit.write_text(text.replace(installed, str(BIN / "tessera")))
    return unit


needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd is not installed (make install)"
)


@needs_systemd
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = (DEPLOY / "systemd" / "tessera-node.service").read_text()
    done = _verify(_verifiable(tmp_path, text))
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""  # not even a warning


@needs_systemd
def test_systemd_verify_refuses_an_unknown_directive(tmp_path: Path) -> None:
    text = (DEPLOY / "systemd" / "tessera-node.service").read_text()
    broken = text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    done = _verify(_verifiable(tmp_path, broken))
    assert "Unknown key 'NoNewPrivilege'" in done.stderr


def test_systemd_unit_runs_the_node_unprivileged_and_confined() -> None:
    unit = _unit(DEPLOY / "systemd" / "tessera-node.service")
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert service["ExecStart"].split()[1:] == NODE_START
    assert service["User"] == "tessera" and service["Group"] == "tessera"
    for key, value in {
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "UMask": "0077",
        "StateDirectory": "tessera",
    }.items():
        assert service.get(key) == value, key
    # The one folder it may write is node.toml's data folder.
    assert service["ReadWritePaths"] == _node_example()["data"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def _sysusers(path: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-sysusers", "--dry-run", f"--root={root}", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@needs_systemd
def test_sysusers_file_creates_the_tessera_user(tmp_path: Path) -> None:
    (tmp_path / "root" / "etc").mkdir(parents=True)
    done = _sysusers(DEPLOY / "systemd" / "tessera.sysusers", tmp_path / "root")
    assert done.returncode == 0, done.stderr
    assert "Creating user 'tessera'" in done.stderr + done.stdout
    assert list((tmp_path / "root" / "etc").iterdir()) == []  # a dry run writes nothing
    bad = tmp_path / "bad.sysusers"
    bad.write_text('u tessera - "Tessera" /var/lib/tessera /usr/sbin/nologin junk\n')
    assert _sysusers(bad, tmp_path / "root").returncode != 0


# -- Containerfiles --------------------------------------------------------------------

IMAGES = {
    # file: (command, port)
    "Containerfile.node": (NODE_START, 47101),
    "Containerfile.gateway": (None, 8470),
}


def _stages(path: Path) -> tuple[dict[str, str], list[list[dockerfile.Command]]]:
    """The file's global ARG defaults and its build stages (instructions per FROM)."""
    args: dict[str, str] = {}
    stages: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(path)):
        if command.cmd == "FROM":
            stages.append([command])
        elif stages:
            stages[-1].append(command)
        elif command.cmd == "ARG":
            name, _, default = command.value[0].partition("=")
            args[name] = default
    return args, stages


def _one(stage: list[dockerfile.Command], cmd: str) -> dockerfile.Command:
    found = [c for c in stage if c.cmd == cmd]
    assert len(found) == 1, f"{len(found)} {cmd} instructions"
    return found[0]


def _healthcheck(name: str) -> list[str]:
    command = _one(_stages(DEPLOY / name)[1][-1], "HEALTHCHECK")
    assert command.json and command.value[0] == "CMD"
    return list(command.value[1:])


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_containerfile_is_slim_unprivileged_and_has_a_healthcheck(name: str) -> None:
    args, stages = _stages(DEPLOY / name)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert [s[0].value[0] for s in stages] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    final = stages[-1]
    user = _one(final, "USER").value[0].split(":")[0]
    assert user not in {"root", "0"} and int(user) >= 1000
    # Nothing after USER runs as root again.
    after = final[final.index(_one(final, "USER")) :]
    assert [c for c in after if c.cmd == "RUN"] == []
    assert _healthcheck(name)[0] == "python"
    command, port = IMAGES[name]
    assert _one(final, "EXPOSE").value == (str(port),)
    assert _one(final, "ENTRYPOINT").value == ("tessera",)
    if command is not None:
        assert list(_one(final, "CMD").value) == command
        assert port == _port(_node_example()["listen"])
    # The wheel is built in the first stage and installed in the final one.
    build = " ".join(c.value[0] for c in stages[0] if c.cmd == "RUN")
    assert "python -m build --wheel" in build and "gcc" in build
    for copy in (c for s in stages for c in s if c.cmd == "COPY" and not c.flags):
        for source in copy.value[:-1]:
            assert (ROOT / source).exists(), f"{name} copies {source}, not in the repository"


def test_node_image_probes_with_the_shipped_probe() -> None:
    _, stages = _stages(DEPLOY / "Containerfile.node")
    copies = {c.value[-1]: c.value[0] for c in stages[-1] if c.cmd == "COPY" and not c.flags}
    assert copies[PROBE] == "deploy/node-probe.py"
    assert _healthcheck("Containerfile.node") == [
        "python",
        PROBE,
        "/v1/health",
        "--config",
        "/etc/tessera/node.toml",
    ]


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _node_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A custodian's own key and self-signed certificate, made as `tessera node init`
    makes them."""
    self_signed_node(folder / name, 1, "node-a.hospital-a.example")
    return folder / name / "node.crt", folder / name / "node.key"


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        del request, client_address  # a refused handshake is what some tests want


@contextlib.contextmanager
def _https_server(
    cert: tuple[Path, Path], answers: dict[str, int], *, clients: Path | None = None
) -> Iterator[int]:
    """An HTTPS server on loopback answering ``answers[path]`` (404 elsewhere); with
    ``clients``, mutual TLS: only a client presenting that certificate gets through."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = answers.get(self.path, 404)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            del args

    server = _QuietServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    if clients is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(clients))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _node_probe(folder: Path, cert: tuple[Path, Path], port: int, path: str) -> int:
    """Run the node image's HEALTHCHECK command, its probe and node.toml here."""
    example = (DEPLOY / "node.example.toml").read_text()
    config = folder / "node.toml"
    config.write_text(
        example.replace('"0.0.0.0:47101"', f'"0.0.0.0:{port}"')
        .replace('"/etc/tessera/tls/node.crt"', json.dumps(str(cert[0])))
        .replace('"/etc/tessera/tls/node.key"', json.dumps(str(cert[1])))
    )
    command = _healthcheck("Containerfile.node")
    command = [
        sys.executable if a == "python" else str(config) if a.endswith("node.toml") else a
        for a in command
    ]
    command[command.index(PROBE)] = str(DEPLOY / "node-probe.py")
    command[command.index("/v1/health")] = path
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    assert done.returncode == 0 or done.stderr.startswith("node-probe: "), done.stderr
    return done.returncode


def test_node_healthcheck_speaks_mutual_tls_with_the_nodes_own_certificate(
    tmp_path: Path,
) -> None:
    node = _node_certificate(tmp_path, "node")
    stranger = _node_certificate(tmp_path, "stranger")
    answers = {"/v1/health": 200, "/v1/ready": 503}
    # The node pins its own certificate among its peers': the probe presents it.
    with _https_server(node, answers, clients=node[0]) as port:
        assert _node_probe(tmp_path, node, port, "/v1/health") == 0
        assert _node_probe(tmp_path, node, port, "/v1/ready") == 1  # alive, not ready
        # A probe with another certificate is refused by the node, and a node that
        # presents another certificate is refused by the probe.
        assert _node_probe(tmp_path, stranger, port, "/v1/health") == 1
    with _https_server(stranger, answers, clients=node[0]) as port:
        assert _node_probe(tmp_path, node, port, "/v1/health") == 1
    assert _node_probe(tmp_path, node, port, "/v1/health") == 1  # nothing listens


def test_node_probe_refuses_a_wrong_use(tmp_path: Path) -> None:
    probe = [sys.executable, str(DEPLOY / "node-probe.py")]
    wrong = subprocess.run([*probe, "/v1/tables"], capture_output=True, text=True, check=False)
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage: ")
    missing = subprocess.run(
        [*probe, "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "none.toml" in missing.stderr


def test_gateway_healthcheck_passes_only_when_the_gateway_answers(tmp_path: Path) -> None:
    command = _healthcheck("Containerfile.gateway")
    assert command[:2] == ["python", "-c"]
    code = command[2]
    assert "https://127.0.0.1:8470/api/v1/health'" in code
    gateway = _certificate(tmp_path, "gateway")

    def probe(at: int) -> int:
        script = code.replace("127.0.0.1:8470/", f"127.0.0.1:{at}/")
        return subprocess.run(
            [sys.executable, "-c", script], capture_output=True, check=False, timeout=30
        ).returncode

    with _https_server(gateway, {"/api/v1/health": 200}) as up:
        assert probe(up) == 0
    with _https_server(gateway, {"/api/v1/health": 503}) as failing:
        assert probe(failing) != 0
    assert probe(up) != 0  # nothing listens there any more


# -- Helm ------------------------------------------------------------------------------

_HELM = r"""
import json, sys
import helm_python as helm
chart, values, kube = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
out = {"lint": helm.lint(chart, values, strict=True, kube_version="v" + kube)}
try:
    with helm.Chart.load(chart) as loaded:
        out["render"] = loaded.render(
            values, name="custodian-1", namespace="hospital-a", is_install=True
        )
except helm.HelmError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


def _helm(values: dict[str, Any], kube: str = KUBE_VERSIONS[-1]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _HELM, str(CHART), json.dumps(values), kube],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


#: The values an operator gives on top of values.yaml (the rest is its example custodian).
VALUES: dict[str, Any] = {"consortium": {"fingerprint": FINGERPRINT}}


@pytest.fixture(scope="module")
def chart() -> dict[str, Any]:
    return _helm(VALUES)


def test_helm_lint_strict_finds_nothing(chart: dict[str, Any]) -> None:
    assert chart["lint"]["errors"] == []
    serious = [m for m in chart["lint"]["messages"] if m["severity"] >= 2]
    assert serious == []
    assert "error" not in chart


def test_helm_chart_runs_this_release(chart: dict[str, Any]) -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["appVersion"] == __version__  # one version: tessera.version
    (sts,) = [d for d in _manifests(chart["render"]) if d["kind"] == "StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    images = {c["image"] for c in pod["containers"] + pod["initContainers"]}
    assert images == {f"tessera-node:{__version__}"}


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_rendered_manifests_match_the_kubernetes_schemas(kube: str) -> None:
    docs = _manifests(_helm(VALUES, kube)["render"])
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Service", "Service", "StatefulSet"]
    refused = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.ValidationError as exc:  # its str() is the whole schema
            where = ".".join(str(p) for p in exc.absolute_path)
            refused.append(f"{doc['kind']} {doc['metadata']['name']}: {where}: {exc.message}")
    assert refused == []


def test_kubernetes_schema_check_refuses_a_misspelt_field(chart: dict[str, Any]) -> None:
    (sts,) = [d for d in _manifests(chart["render"]) if d["kind"] == "StatefulSet"]
    sts["spec"]["replica"] = sts["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError) as refused:
        kubernetes_validate.validate(sts, KUBE_VERSIONS[-1], strict=True)
    assert "'replica' was unexpected" in refused.value.message


def test_helm_chart_runs_one_confined_custodian_with_its_own_keys(
    chart: dict[str, Any], tmp_path: Path
) -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _manifests(chart["render"])}
    config = docs["ConfigMap", "custodian-1-tessera-node"]["data"]["node.toml"]
    assert set(tomllib.loads(config)["node"]) == NODE_KEYS
    node = _settings(config, tmp_path)  # the node's own reading of it
    assert node.id == 1 and node.log == "json"
    assert node.address == ("node-a.hospital-a.example", 47101)
    spec = docs["StatefulSet", "custodian-1-tessera-node"]["spec"]
    assert spec["replicas"] == 1
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == NODE_START
    assert container["ports"][0]["containerPort"] == node.listen[1] == 47101
    config_args = ["--config", "/etc/tessera/node.toml"]
    assert container["livenessProbe"]["exec"]["command"] == [
        "python", PROBE, "/v1/health", *config_args
    ]  # fmt: skip
    assert container["readinessProbe"]["exec"]["command"] == [
        "python", PROBE, "/v1/ready", *config_args
    ]  # fmt: skip
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    for each in [container, *pod["initContainers"]]:
        assert each["securityContext"]["readOnlyRootFilesystem"] is True
        assert each["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["name"]: Path(m["mountPath"]) for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # The TLS files come from the operator's Secret, mounted where node.toml says.
    assert volumes["tls"]["secret"]["secretName"] == "tessera-node-tls"
    assert node.tls_cert.parent == node.tls_key.parent == mounts["tls"]
    # Its data, with the manifests it installs, on its own claim.
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data" and mounts["data"] == node.data
    assert node.consortium.parent == node.data
    assert "Secret" not in {kind for kind, _ in docs}  # the chart makes no key


def test_helm_chart_joins_with_the_fingerprint_compared_out_of_band(
    chart: dict[str, Any], tmp_path: Path
) -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _manifests(chart["render"])}
    node = _settings(docs["ConfigMap", "custodian-1-tessera-node"]["data"]["node.toml"], tmp_path)
    pod = docs["StatefulSet", "custodian-1-tessera-node"]["spec"]["template"]["spec"]
    (join,) = pod["initContainers"]
    script = " ".join(join["args"])
    # Only before the node joined (afterwards it keeps the manifests pushed to it).
    assert script.startswith(f"test -e {node.consortium} || exec tessera node join ")
    mounts = {m["name"]: m["mountPath"] for m in join["volumeMounts"]}
    manifest = f"{mounts['consortium']}/consortium.json"
    assert f"node join {manifest} --config /etc/tessera/node.toml" in script
    assert '--fingerprint "$MANIFEST_FINGERPRINT"' in script
    assert join["env"] == [{"name": "MANIFEST_FINGERPRINT", "value": FINGERPRINT}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["consortium"]["configMap"]["name"] == "tessera-consortium"


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"node": {"id": None}}, "node.id"),
        ({"node": {"id": "one"}}, "node.id: a positive whole number"),
        ({"node": {"id": 0}}, "node.id"),
        ({"node": {"address": None}}, "node.address"),
        ({"tls": {"secretName": ""}}, "tls.secretName"),
        ({"consortium": {"configMapName": ""}}, "consortium.configMapName"),
        ({"consortium": {"fingerprint": ""}}, "consortium.fingerprint"),
        ({"consortium": {"fingerprint": "9501 E616"}}, "at least 20 hexadecimal digits"),
    ],
)
def test_helm_chart_refuses_a_custodian_without_its_identity(
    values: dict[str, Any], refusal: str
) -> None:
    merged = {**VALUES, **values}
    if "consortium" in values:
        merged["consortium"] = {**VALUES["consortium"], **values["consortium"]}
    result = _helm(merged)
    assert "render" not in result
    assert refusal in result["error"]

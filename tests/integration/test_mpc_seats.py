"""MPyC seats bound to TLS certificates: real party processes over TLS on loopback.

Three parties of a tiny MPyC program (a secure sum), each in its own folder with the
``.config`` files ``--ssl`` reads.  The certificates are made here the way
:mod:`tessera.workflows.nodes_pki` makes node certificates (CN ``tessera-node-I``, DNS
names ``tessera-node-I`` and ``MPyC party I-1``).  An impostor is a party given another
node's certificate and key: valid, from the same CA, wrong seat.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

pytestmark = pytest.mark.integration

PARTIES = 3
DEADLINE_S = 60.0  # for the parties that must finish
GRACE_S = 5.0  # then for the others (a party may wait forever for peers that have left)

PROGRAM = """
import os

if os.environ.get("PLAIN_IMPOSTOR"):  # plain MPyC that never gives up a connection
    from mpyc import asyncoro

    asyncoro.MessageExchanger.connection_lost = lambda self, exc: None
else:
    from tessera.mpc import _speedups

    _speedups.install()
from mpyc.runtime import mpc


async def main():
    await mpc.start()
    secint = mpc.SecInt(16)
    total = await mpc.output(mpc.sum(mpc.input(secint(mpc.pid + 1))))
    print(f"sum {total}", flush=True)
    await mpc.shutdown()


mpc.run(main())
"""


@dataclass
class Outcome:
    code: int | None  # None: still running when given up on (then killed)
    out: str
    err: str

    @property
    def last(self) -> str:
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ca.crt`` and ``node-I.crt/.key`` for I = 1..PARTIES, as the node PKI makes them."""
    folder = tmp_path_factory.mktemp("seats-pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tessera CA seats")])
    ca = (
        _cert("Tessera CA seats", ca_name, ca_key, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for node in range(1, PARTIES + 1):
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName(f"tessera-node-{node}"),
            x509.DNSName(f"MPyC party {node - 1}"),
            x509.DNSName("localhost"),
        ]
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
        cert = (
            _cert(f"tessera-node-{node}", ca_name, key, ca_key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (folder / f"node-{node}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"node-{node}.key").write_bytes(_pem_key(key))
    return folder


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _folder(root: Path, pki: Path, party: int, node: int) -> Path:
    """Party ``party``'s working folder holding node ``node``'s certificate and key."""
    folder = root / f"party-{party}"
    cfg = folder / ".config"
    cfg.mkdir(parents=True)
    (cfg / f"party_{party}.crt").write_bytes((pki / f"node-{node}.crt").read_bytes())
    key = cfg / f"party_{party}.key"
    key.write_bytes((pki / f"node-{node}.key").read_bytes())
    key.chmod(0o600)
    (cfg / "mpyc_ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    (folder / "program.py").write_text(PROGRAM)
    return folder


def _run(
    root: Path,
    pki: Path,
    *,
    must_finish: set[int],
    certs: dict[int, int] | None = None,
    plain: int | None = None,
) -> list[Outcome]:
    """Run the parties and collect what they did; none is left running.

    Party i uses node ``certs.get(i, i + 1)``'s certificate; party ``plain`` runs plain
    MPyC and keeps trying whatever its peers do.  Waits up to ``DEADLINE_S`` for the
    parties in ``must_finish`` and for one party outside ``certs`` to end, then
    ``GRACE_S`` for the others.
    """
    certs = certs or {}
    ports = _free_ports(PARTIES)
    argv = [a for p in ports for a in ("-P", f"127.0.0.1:{p}")] + ["--ssl", "--no-log"]
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in range(PARTIES):
            folder = _folder(root, pki, i, certs.get(i, i + 1))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "program.py", "-I", str(i), *argv],
                    cwd=folder,
                    env=dict(os.environ, PLAIN_IMPOSTOR="1" if i == plain else ""),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        _wait(procs, must_finish, set(range(PARTIES)) - set(certs))
    finally:
        outcomes = []
        for proc in procs:
            running = proc.poll() is None
            if running:
                proc.kill()
            out, err = proc.communicate()
            outcomes.append(Outcome(None if running else proc.returncode, out, err))
    return outcomes


def _wait(procs: list[subprocess.Popen[str]], must_finish: set[int], honest: set[int]) -> None:
    end = time.monotonic() + DEADLINE_S
    graced = False
    while time.monotonic() < end and any(p.poll() is None for p in procs):
        done = {i for i, p in enumerate(procs) if p.poll() is not None}
        if not graced and must_finish <= done and done & honest:
            end, graced = min(end, time.monotonic() + GRACE_S), True
        time.sleep(0.05)


def test_honest_parties_compute(tmp_path: Path, pki: Path) -> None:
    outcomes = _run(tmp_path, pki, must_finish=set(range(PARTIES)))
    for o in outcomes:
        assert o.code == 0, o.err
        assert o.out.strip() == f"sum {sum(range(1, PARTIES + 1))}"
        assert "seat check" not in o.err


MISMATCH = "seat check: peer listening as party {p} fails verification as party {p}: "
HOSTNAME = "Hostname mismatch, certificate is not valid for 'MPyC party {p}'."

# impostor party, node whose certificate it holds (node N names party N-1), and the line
# each honest party that always meets the impostor first must log.
CASES: dict[str, tuple[int, int, dict[int, str]]] = {
    # party 1 listens for party 0 and dials party 2: both ends in one run
    "both-ends": (
        1,
        1,
        {
            0: (MISMATCH + HOSTNAME).format(p=1),
            2: "seat check: peer claims party 1 but its certificate names party 0",
        },
    ),
    # party 0 only dials; party 1, dialled first, sees the impostor connect
    "impostor-connects": (
        0,
        2,
        {1: "seat check: peer claims party 0 but its certificate names party 1"},
    ),
    # party 2 only listens; parties 0 and 1 dial it, which of them first is a race
    "impostor-listens": (2, 1, {}),
}


@pytest.mark.parametrize("plain", [True, False], ids=["plain-impostor", "patched-impostor"])
@pytest.mark.parametrize("case", list(CASES))
def test_impostor_fails_the_run(tmp_path: Path, pki: Path, case: str, plain: bool) -> None:
    """Honest parties that meet the impostor leave at once with a seat-check line.

    The others leave when they lose a peer during start-up, or wait for a peer that has
    left (the requester's job abort stops those on a node); none computes a result.  A
    plain-MPyC impostor that keeps trying always meets the honest parties that come to it
    first; one running Tessera's checks leaves when it loses a peer, maybe before some
    honest party has dialled it.
    """
    impostor, stolen, detectors = CASES[case]
    if not plain:
        detectors = {}
    started = time.monotonic()
    outcomes = _run(
        tmp_path,
        pki,
        must_finish=set(detectors),
        certs={impostor: stolen},
        plain=impostor if plain else None,
    )
    assert time.monotonic() - started < DEADLINE_S + GRACE_S + 10
    for party, line in detectors.items():
        assert outcomes[party].code == 1, outcomes[party]
        assert outcomes[party].last == line, outcomes[party].err
    honest = [o for i, o in enumerate(outcomes) if i != impostor]
    for o in outcomes:
        assert "sum" not in o.out, o
    for o in honest:
        assert o.code in (1, None), o
        if o.code is not None:
            assert o.last.startswith(("seat check: ", "mpc start-up: lost party ")), o.err
    seat_lines = [o.last for o in honest if o.last.startswith("seat check: ")]
    assert seat_lines, [o.err for o in outcomes]
    if case == "impostor-listens":
        assert all(line == (MISMATCH + HOSTNAME).format(p=2) for line in seat_lines)

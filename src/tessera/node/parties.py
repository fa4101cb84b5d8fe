"""A custodian node's MPC party processes: one kept warm for the next job.

A warm party (``python -m tessera.mpc.party --zygote``) has imported everything but
``mpyc.runtime`` and waits for one job on stdin, so that a job does not pay for
interpreter start-up.  The first one starts when the node is told a job is coming (or
receives table shares); each job that takes it starts the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tessera.mpc.party import NODE_PID_ENV

__all__ = ["PartyPool"]


class PartyPool:
    """Party processes for the jobs of the node whose folder is ``root``."""

    def __init__(self, root: Path, *, warm: bool = True) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._closed = not warm  # no warm party processes at all when warm=False
        self._zygote: tuple[subprocess.Popen[bytes], Path] | None = None

    def _spawn(self) -> None:
        """Start a warm party process for the next job (see ``party.zygote``)."""
        logs = self.root / "jobs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"zygote-{time.monotonic_ns()}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tessera.mpc.party", "--zygote"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=logs,
                env=dict(os.environ, **{NODE_PID_ENV: str(os.getpid())}),
            )
        self._zygote = (proc, log_path)

    def refill(self) -> None:
        """Start a warm party unless one is ready (or the pool is closed)."""
        with self._lock:
            if self._zygote is not None or self._closed:
                return
            self._spawn()

    def take(self, folder: Path, argv: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        """A party process running ``argv`` in ``folder``: the warm one if ready."""
        with self._lock:
            warm, self._zygote = self._zygote, None
        if warm is not None and warm[0].poll() is None and warm[0].stdin is not None:
            proc, log_path = warm
            stdin = warm[0].stdin
            try:
                stdin.write(json.dumps({"folder": str(folder), "argv": argv}).encode() + b"\n")
                stdin.close()
            except OSError:
                proc.kill()
                proc.wait()
            else:
                return proc, log_path
        log_path = folder / "party.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tessera.mpc.party", *argv],
                cwd=folder,
                env=dict(
                    os.environ, TESSERA_MPC_JOB=str(folder), **{NODE_PID_ENV: str(os.getpid())}
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return proc, log_path

    def close(self) -> None:
        """Stop the warm party process; start no other."""
        with self._lock:
            self._closed = True
            warm, self._zygote = self._zygote, None
        if warm is not None:
            if warm[0].stdin is not None:
                warm[0].stdin.close()
            warm[0].kill()
            warm[0].wait()
            warm[1].unlink(missing_ok=True)

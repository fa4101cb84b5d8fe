"""``tessera demo``: the narrated tour of every capability, on the embedded default.

The steps are the shell scripts in ``tessera/samples/demo/`` (``NN-name.sh``): each one
is what a data steward, researcher or security officer would type, run against
environments created in a scratch folder (local stores, custodian processes on
loopback).  ``make demo`` runs the same steps through this command.

Each step gets in its environment: ``DEMO_DIR`` (the scratch folder, shared by the
steps so later ones can reuse earlier environments), ``TESSERA_HOME``,
``TESSERA_PASSPHRASE`` (a demo value unless already set), ``TESSERA_PYTHON`` (this
interpreter, for the samples' generators), ``TESSERA_SAMPLES`` (the samples folder)
and ``PATH`` with the ``tessera`` command first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tessera.errors import BackendError, ConfigError, UsageError

__all__ = ["DemoStep", "demo_steps", "run_demo"]

DEMO_PASSPHRASE = "demo-only-passphrase"  # noqa: S105 - encrypts throwaway demo keys


@dataclass(frozen=True)
class DemoStep:
    """One narrated step: ``20-vault.sh`` is named ``vault``."""

    name: str
    script: Path
    summary: str

    @property
    def headline(self) -> str:
        """The summary cut to one line."""
        return self.summary if len(self.summary) <= 90 else self.summary[:89] + "…"


def _summary(script: Path) -> str:
    """The first sentence of the comment block after the shebang."""
    words: list[str] = []
    for line in script.read_text(encoding="utf-8").splitlines()[1:]:
        if not line.startswith("#"):
            break
        words.append(line.lstrip("# ").strip())
    text = " ".join(words)
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def demo_steps(samples: Path) -> list[DemoStep]:
    """The steps in ``samples/demo``, in order."""
    scripts = sorted((samples / "demo").glob("[0-9][0-9]-*.sh"))
    return [DemoStep(s.stem.split("-", 1)[1], s, _summary(s)) for s in scripts]


def _select(steps: Sequence[DemoStep], only: Sequence[str]) -> list[DemoStep]:
    if not only:
        return list(steps)
    names = {s.name for s in steps}
    unknown = [o for o in only if o not in names]
    if unknown:
        raise UsageError(f"no demo step {unknown[0]!r} (steps: {', '.join(sorted(names))})")
    return [s for s in steps if s.name in only]


def _tessera_command() -> Path:
    beside = Path(sys.executable).with_name("tessera")
    if beside.exists():
        return beside
    found = shutil.which("tessera")
    if found is None:
        raise ConfigError("the demo needs the tessera command on PATH")
    return Path(found)


def _stop_nodes(tessera: Path, scratch: Path, env: dict[str, str]) -> None:
    """Stop the custodian processes of every environment the demo created."""
    for config in scratch.glob("*/tessera.toml"):
        subprocess.run(
            [str(tessera), "node", "stop", "--home", str(config.parent)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=60,
        )


def run_demo(
    *,
    only: Sequence[str] = (),
    folder: Path | None = None,
    announce: Callable[[str], None] = print,
) -> list[DemoStep]:
    """Run the demo steps (all, or those named in ``only``) in ``folder`` (kept) or in
    a scratch folder (removed afterwards); return the steps run.

    A step that fails raises :class:`BackendError` naming it; the custodian processes
    the demo started are stopped whatever happens.
    """
    bash = shutil.which("bash")
    if bash is None:
        raise ConfigError("the demo needs bash")
    tessera = _tessera_command()
    with ExitStack() as stack:
        samples = stack.enter_context(resources.as_file(resources.files("tessera.samples")))
        steps = _select(demo_steps(samples), only)
        if folder is None:
            scratch = Path(tempfile.mkdtemp(prefix="tessera-demo."))
            stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        else:
            scratch = folder.resolve()
            scratch.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "DEMO_DIR": str(scratch),
            "TESSERA_HOME": str(scratch / "home"),
            "TESSERA_PASSPHRASE": os.environ.get("TESSERA_PASSPHRASE", DEMO_PASSPHRASE),
            "TESSERA_PYTHON": sys.executable,
            "TESSERA_SAMPLES": str(samples),
            "PATH": f"{tessera.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        stack.callback(_stop_nodes, tessera, scratch, env)
        announce(f"Tessera demo — folder {scratch}")
        for step in steps:
            announce("")
            announce("=" * 64)
            announce(f"== {step.script.name}: {step.headline}")
            announce("=" * 64)
            sys.stdout.flush()
            done = subprocess.run([bash, str(step.script)], env=env, check=False)
            if done.returncode:
                raise BackendError(
                    f"demo step {step.name} ({step.script.name}) failed with exit code "
                    f"{done.returncode}"
                )
        announce("")
        announce("Demo finished.")
    return steps

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
import textwrap
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tessera.errors import BackendError, ConfigError, UsageError

__all__ = ["DemoStep", "demo_steps", "next_steps", "run_demo"]

DEMO_PASSPHRASE = "demo-only-passphrase"  # noqa: S105 - encrypts throwaway demo keys
BANNER_WIDTH = 78
TITLE_MAX = 60


@dataclass(frozen=True)
class DemoStep:
    """One narrated step: ``20-vault.sh`` is named ``vault``."""

    name: str
    script: Path
    summary: str

    @property
    def headline(self) -> str:
        """The step's title, never cut: the summary's words before its first colon
        ("The vault"), or the whole summary when it has no short lead."""
        lead, colon, _ = self.summary.partition(": ")
        return lead if colon and len(lead) <= TITLE_MAX else self.summary

    @property
    def detail(self) -> str:
        """The summary after its title ("" when the title is the whole summary)."""
        rest = self.summary[len(self.headline) :].removeprefix(": ").strip()
        return rest[:1].upper() + rest[1:]

    def banner(self, width: int = BANNER_WIDTH) -> list[str]:
        """The step's title between two rules, then the rest of its summary wrapped at
        word boundaries to ``width`` columns."""
        rule = "=" * width
        return [
            rule,
            f"== {self.script.name}: {self.headline}",
            rule,
            *textwrap.wrap(self.detail, width, break_on_hyphens=False),
        ]


def _summary(script: Path) -> str:
    """The first sentence of the comment block after the shebang."""
    words: list[str] = []
    for line in script.read_text(encoding="utf-8").splitlines()[1:]:
        if not line.startswith("#"):
            break
        words.append(line.lstrip("# ").strip())
    text = " ".join(words)
    ends = [i for i in (text.find(". "), text.find("? ")) if i >= 0]
    return text[: min(ends) + 1] if ends else text


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
            # The demo's environments are thrown away: `tessera init` must not remember one
            # in place of the environment the user made last.
            "XDG_CONFIG_HOME": str(scratch / ".config"),
            "TESSERA_PYTHON": sys.executable,
            "TESSERA_SAMPLES": str(samples),
            "PATH": f"{tessera.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        stack.callback(_stop_nodes, tessera, scratch, env)
        announce(f"Tessera demo — folder {scratch}")
        for step in steps:
            announce("")
            for line in step.banner():
                announce(line)
            sys.stdout.flush()
            done = subprocess.run([bash, str(step.script)], env=env, check=False)
            if done.returncode:
                raise BackendError(
                    f"demo step {step.name} ({step.script.name}) failed with exit code "
                    f"{done.returncode}"
                )
        announce("")
        announce("Demo finished.")
    for line in next_steps():
        announce(line)
    return steps


def next_steps() -> list[str]:
    """The demo's last lines: how to put ``tessera`` on PATH (when it is not) and the
    three commands to try next on one's own data."""
    commands: list[tuple[str, str]] = []
    bin_dir = Path(sys.executable).parent
    # `make demo` puts the virtual environment first on PATH; the user's shell has not.
    elsewhere = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != bin_dir
    )
    venv = sys.prefix != sys.base_prefix and (bin_dir / "activate").exists()
    if venv and not os.environ.get("VIRTUAL_ENV") and not shutil.which("tessera", path=elsewhere):
        commands.append((f". {bin_dir / 'activate'}", "puts tessera on PATH in this shell"))
    commands += [
        ("tessera init ~/tessera-env --nodes 5 --threshold 3", "later commands use it"),
        ("tessera vault put scan.dcm", "k-of-n fragments on 5 stores"),
        ("tessera vault ls", "what the vault holds"),
    ]
    width = max(len(c) for c, _ in commands)
    lines = ["", "Next, on your own files:"]
    lines += [f"  {c:<{width}}   # {why}" for c, why in commands]
    return lines

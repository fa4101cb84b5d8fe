"""The wheel built from this working tree, alone in a clean virtual environment.

``python -m build`` runs on a copy of the working tree (the files git tracks, and the new
ones it does not ignore: what a fresh clone with these changes holds), so nothing is
written into the tree.  The wheel must carry the compiled kernel and every file the
package opens at run time; a fresh venv (no system site packages) that installs only
that wheel and its dependencies (``-c constraints.txt``) must answer ``tessera
--version`` and run ``tessera demo`` from a scratch HOME and folder, with ``tessera``
imported from the venv and never from the source tree.

``make test`` builds the wheel and checks its contents file by file; the clean venv
(its install alone takes about a minute) and the demo from it run with ``make
test-slow`` (``-m slow``): first two steps that load the compiled kernel and start
custodian nodes and MPC parties from the wheel, then the rest of the demo.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
from keyscan import plain_keys

from tessera.version import PROTOCOL_VERSION, __version__

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("wheel")]

ROOT = Path(__file__).resolve().parents[2]
DIST = "tessera-tde"
#: The demo steps run in make test (see the module's docstring); the others are slow.
QUICK_STEPS = ("share", "sql")
BUILD_S = 300
INSTALL_S = 900
DEMO_S = 900


def _tree_files() -> list[str]:
    """The working tree's files as a fresh clone with these changes would hold them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def _run(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in its own process group; on a time-out or an error here, interrupt
    it (the demo then stops the custodians it started), then kill what is left."""
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=60)
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _check(done: subprocess.CompletedProcess[str], what: str) -> str:
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel made by ``python -m build`` from a copy of the tree."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tree to build is what git lists")
    base = tmp_path_factory.mktemp("wheel-build")
    tree = base / "tree"
    for name in _tree_files():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    out = base / "dist"
    _check(
        _run(
            [sys.executable, "-m", "build", "--outdir", str(out), str(tree)],
            cwd=base,
            timeout=BUILD_S,
        ),
        "python -m build",
    )
    (wheel,) = out.glob("tessera_tde-*.whl")
    (sdist,) = out.glob("tessera_tde-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "tree": tree}


def test_wheel_carries_the_kernel_every_package_file_and_one_version(
    built: dict[str, Path],
) -> None:
    wheel = built["wheel"]
    assert wheel.name.startswith(f"tessera_tde-{__version__}-cp3")  # a platform wheel
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = f"tessera_tde-{__version__}.dist-info"
        meta = Parser().parsestr(whl.read(f"{info}/METADATA").decode())
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    assert meta["Name"] == DIST and meta["Version"] == __version__
    # ... read from tessera.version, the one place the version is written
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "tessera.version.__version__"}
    assert "tessera = tessera.cli.main:main" in entry_points
    kernels = [n for n in names if n.startswith("tessera/core/_xor.") and n.endswith(".so")]
    assert len(kernels) == 1, sorted(names)
    # Everything the package holds in the tree (modules, the kernel's stub, py.typed,
    # the console's static files, the demo steps, the sample data) is in the wheel:
    # nothing that importlib.resources or Path(__file__) opens at run time is left out.
    package = [
        name.removeprefix("src/")
        for name in _tree_files()
        if name.startswith("src/tessera/") and "/__pycache__/" not in name
    ]
    assert len(package) > 150
    missing = sorted(set(package) - names)
    assert missing == [], f"not in the wheel: {missing}"
    for runtime in ("tessera/server/static/console.html", "tessera/samples/demo/10-share.sh"):
        assert runtime in names


def test_sdist_rebuilds_the_kernel(built: dict[str, Path]) -> None:
    """The sdist holds what a build from it needs: the C source and setup.py."""
    done = subprocess.run(
        ["tar", "tzf", str(built["sdist"])], capture_output=True, text=True, check=True
    )
    top = f"tessera_tde-{__version__}/"
    for name in ("setup.py", "pyproject.toml", "src/tessera/core/_xor.c", "src/tessera/version.py"):
        assert top + name in done.stdout.splitlines(), name


@pytest.fixture(scope="session")
def clean_venv(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A fresh venv with only the wheel (and its dependencies), a scratch HOME, working
    folder and TMPDIR, and the minimal environment the commands run with."""
    base = tmp_path_factory.mktemp("clean-venv")
    venv = base / "venv"
    _check(_run([sys.executable, "-m", "venv", str(venv)], cwd=base, timeout=120), "venv")
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    bin_dir = venv / "bin"
    home, work, scratch_tmp = base / "home", base / "work", base / "tmp"
    for folder in (home, work, scratch_tmp):
        folder.mkdir()
    env = {
        "HOME": str(home),
        "PATH": os.pathsep.join([str(bin_dir), "/usr/local/bin", "/usr/bin", "/bin"]),
        "LANG": "C.UTF-8",
        "TMPDIR": str(scratch_tmp),  # the demo's scratch folders land here
    }
    for name in ("PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "SSL_CERT_FILE"):
        if name in os.environ:  # how this machine reaches the package index
            env[name] = os.environ[name]
    # pip's cache is the user's (not the scratch HOME's): downloads are not repeated
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    _check(
        _run(
            [
                str(bin_dir / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-c",
                str(built["tree"] / "constraints.txt"),
                f"{built['wheel']}[all]",
            ],
            cwd=work,
            env=env,
            timeout=INSTALL_S,
        ),
        "pip install of the wheel",
    )
    steps = _check(
        _run([str(bin_dir / "tessera"), "demo", "--list"], cwd=work, env=env, timeout=120),
        "tessera demo --list",
    )
    return {
        "venv": venv,
        "bin": bin_dir,
        "env": env,
        "work": work,
        "tmp": scratch_tmp,
        "steps": [line.split()[0] for line in steps.splitlines()],
    }


@pytest.mark.slow
@pytest.mark.timeout(BUILD_S + INSTALL_S)  # the first to use the venv makes it
def test_clean_venv_imports_tessera_from_the_venv_with_the_kernel(
    clean_venv: dict[str, Any],
) -> None:
    bin_dir, env, work = clean_venv["bin"], clean_venv["env"], clean_venv["work"]
    probe = (
        "import sys, importlib.metadata as md, tessera, tessera.core._xor as x, "
        "tessera.core.bitslice as b; "
        "print(tessera.__file__); print(x.__file__); print(b.KERNEL); "
        "print(md.version('tessera-tde')); print(repr(sys.path))"
    )
    lines = _check(
        _run([str(bin_dir / "python"), "-c", probe], cwd=work, env=env, timeout=120), "import"
    ).splitlines()
    site = clean_venv["venv"] / "lib"
    assert Path(lines[0]).is_relative_to(site), lines[0]  # the venv's copy, not src/
    assert Path(lines[1]).is_relative_to(site) and lines[1].endswith(".so"), lines[1]
    assert lines[2] == "c"  # the compiled kernel, not the numpy fallback
    assert lines[3] == __version__
    assert str(ROOT) not in lines[4]

    shown = _check(
        _run([str(bin_dir / "tessera"), "--version"], cwd=work, env=env, timeout=120),
        "tessera --version",
    )
    assert shown.strip() == f"tessera {__version__} (protocol {PROTOCOL_VERSION})"


def _demo(clean_venv: dict[str, Any], steps: list[str], keep: Path | None = None) -> None:
    """Run these demo steps from the clean venv; each one's banner is shown and the
    demo removes its scratch folder (``keep``: the demo's folder instead, kept)."""
    args = [str(clean_venv["bin"] / "tessera"), "demo"]
    for step in steps:
        args += ["--step", step]
    if keep is not None:
        args += ["--dir", str(keep)]
    done = _run(args, cwd=clean_venv["work"], env=clean_venv["env"], timeout=DEMO_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shown = [s.split()[1] for s in done.stdout.splitlines() if s.startswith("== ") and ".sh: " in s]
    assert [s.split("-", 1)[1].removesuffix(".sh:") for s in shown] == steps
    assert "Demo finished." in done.stdout
    assert str(ROOT) not in done.stdout  # every path it names is the venv's or scratch
    assert list(clean_venv["tmp"].glob("tessera-demo.*")) == []  # its scratch folder is gone


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_S + DEMO_S)
def test_clean_venv_runs_the_demo_steps_that_load_every_kind_of_file(
    clean_venv: dict[str, Any],
) -> None:
    assert set(QUICK_STEPS) <= set(clean_venv["steps"])
    _demo(clean_venv, [s for s in clean_venv["steps"] if s in QUICK_STEPS])


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_S + 2 * DEMO_S)
def test_clean_venv_runs_the_whole_demo(clean_venv: dict[str, Any]) -> None:
    # every step, in order: later steps reuse the environments of earlier ones
    assert set(QUICK_STEPS) < set(clean_venv["steps"])
    folder = clean_venv["work"] / "whole-demo"
    _demo(clean_venv, clean_venv["steps"], keep=folder)
    # every key the demo made (people, nodes, gateway users, HE, the consortium) is
    # encrypted at rest: nothing in its folder is a key in the clear
    assert plain_keys(folder) == []

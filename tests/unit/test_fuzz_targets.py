"""The fuzz targets in fuzz/: only TesseraError escapes a parser given bad input.

(a) every seed corpus file replays through its target in-process (fast, deterministic);
(b) every target runs briefly under atheris (libFuzzer) in a subprocess, seeded with its
corpus.  Corpus files named ``known-*`` reproduce bugs reported to the owners of the
code (see ``fuzz/harness.py``): they are expected to fail until fixed (strict xfail),
and are left out of the atheris runs.  The long run is ``bench/fuzz.sh``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"
TARGETS = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
RUNS = 150  # mutations per target in the short run (plus the corpus replay)
TIME_LIMIT_S = 25  # per target: a cap that a loaded machine should never reach


def _target(name: str) -> Callable[[bytes], None]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module = importlib.import_module(f"fuzz.{name}")
    fn: Callable[[bytes], None] = module.TestOneInput
    return fn


def _cases() -> list[object]:
    cases: list[object] = []
    for name in TARGETS:
        for path in sorted((CORPUS / name).iterdir()):
            marks = []
            if path.name.startswith("known-"):
                marks.append(pytest.mark.xfail(reason="reported bug, owned elsewhere"))
            cases.append(pytest.param(name, path, id=f"{name}/{path.name}", marks=marks))
    return cases


def test_every_target_has_a_module_and_seeds() -> None:
    for name in TARGETS:
        assert (ROOT / "fuzz" / f"{name}.py").is_file(), name
        assert any(p.name.startswith("seed-") for p in (CORPUS / name).iterdir()), name
    size = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert size < 1 << 20, f"the seed corpora hold {size} bytes (keep them under 1 MiB)"


@pytest.mark.parametrize(("name", "path"), _cases())
def test_corpus_replays(name: str, path: Path) -> None:
    target = _target(name)
    from fuzz.harness import set_known_guard

    set_known_guard(not path.name.startswith("known-"))
    try:
        target(path.read_bytes())
    finally:
        set_known_guard(True)


def _fuzz(name: str, scratch: Path) -> tuple[str, int, str]:
    seeds = scratch / name / "seeds"
    seeds.mkdir(parents=True)
    for path in (CORPUS / name).iterdir():
        if not path.name.startswith("known-"):
            shutil.copy(path, seeds / path.name)
    grown = scratch / name / "grown"
    grown.mkdir()
    argv = [sys.executable, "-m", f"fuzz.{name}", f"-runs={RUNS}", "-seed=1", "-timeout=20"]
    argv += [f"-max_total_time={TIME_LIMIT_S}", f"-artifact_prefix={scratch / name}/"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*argv, str(grown), str(seeds)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TIME_LIMIT_S + 60,
        check=False,
    )
    return name, done.returncode, done.stderr[-3000:]


def test_short_atheris_runs(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda n: _fuzz(n, tmp_path), TARGETS))
    failed = [f"{name} (rc {rc}):\n{tail}" for name, rc, tail in results if rc != 0]
    assert not failed, "\n\n".join(failed)

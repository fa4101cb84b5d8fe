"""`tessera recommend` end to end: CSVs from three hospitals, parties on loopback."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera.cli.main import main
from tessera.mpc.knn_spec import recommend_plain
from tessera.tables.encode import encode_rows, read_csv
from tessera.tables.schema import Schema
from tessera.workflows.recommend import build_job, patient_units, read_profile

pytestmark = pytest.mark.integration


def _hiv() -> Any:
    return importlib.import_module("tessera.samples.hiv")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hiv")
    _hiv().write_cohort(folder, 240, hospitals=3, seed=3)
    return folder


def _args(folder: Path, *extra: str) -> list[str]:
    csvs = [a for h in (1, 2, 3) for a in ("--csv", str(folder / f"hiv-{h}.csv"))]
    return [
        "recommend",
        "--patient",
        str(folder / "patient.json"),
        *csvs,
        "--schema",
        str(folder / "hiv.schema.yaml"),
        "--home",
        str(folder / "home"),
        *extra,
    ]


def _expected(folder: Path, **mode: int) -> dict[str, Any]:
    text = (folder / "hiv.schema.yaml").read_text()
    schema = Schema.from_yaml(text)
    parts: dict[str, list[Any]] = {}
    for h in (1, 2, 3):
        header, rows = read_csv((folder / f"hiv-{h}.csv").read_bytes())
        for name, v in encode_rows(schema, header, rows).parts.items():
            parts.setdefault(name, []).append(v)
    cat = {name: np.concatenate(v) for name, v in parts.items()}
    job = build_job(schema, read_profile(text), 240, mode="k" if "k" in mode else "radius")
    patient = patient_units(schema, job, json.loads((folder / "patient.json").read_text()))
    res = recommend_plain(
        np.stack([cat[f"{f.name}.val"] for f in job.features], axis=1),
        [f.weight for f in job.features],
        [patient[f.name] for f in job.features],
        cat["regimen.oh"].argmax(axis=1),
        cat["ttf_days.val"],
        cat["failed.val"],
        treatments=job.treatments,
        **mode,
    )
    names = schema.column("regimen").categories
    return {
        "k": res.selected,
        "treatments": [
            {
                "treatment": names[c],
                "count": res.counts[c],
                "mean_time_to_failure": res.time_sums[c] / res.counts[c] if res.counts[c] else None,
                "failures": (res.events or ())[c],
            }
            for c in range(len(names))
        ],
    }


def _suppressed(doc: dict[str, Any], min_group: int) -> dict[str, Any]:
    """The oracle with every treatment under ``min_group`` blanked, as the MPC does."""
    treatments = [
        t if t["count"] >= min_group else {**{k: None for k in t}, "treatment": t["treatment"]}
        for t in doc["treatments"]
    ]
    return {"k": doc["k"], "treatments": treatments}


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    keys = ("treatment", "count", "mean_time_to_failure", "failures")
    return {"k": doc["k"], "treatments": [{k: t[k] for k in keys} for t in doc["treatments"]]}


def test_recommend_json_equals_the_oracle(cohort: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(cohort, "--k", "25", "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["k"] == 25 and len(doc["treatments"]) == 100
    assert _strip(doc) == _expected(cohort, k=25)


def test_recommend_radius_through_the_real_entry_point(cohort: Path) -> None:
    exe = Path(sys.executable).with_name("tessera")
    done = subprocess.run(
        [str(exe), *_args(cohort, "--radius", "1500", "--json")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["mode"] == "radius"
    assert _strip(doc) == _expected(cohort, radius=1500)


def test_recommend_refusals(cohort: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(cohort, "--k", "5", "--radius", "3")) == 2
    assert main(_args(cohort, "--k", "0")) == 1
    assert "between 1 and" in capsys.readouterr().err
    bad = cohort / "bad-patient.json"
    bad.write_text(json.dumps({"age": 200}))
    args = _args(cohort, "--k", "5")
    args[args.index("--patient") + 1] = str(bad)
    assert main(args) == 1
    assert "outside" in capsys.readouterr().err
    no_table = ["recommend", "--patient", str(cohort / "patient.json")]
    assert main([*no_table, "--home", str(cohort / "home")]) == 2


def test_recommend_through_the_custodian_nodes(
    cohort: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Import from three hospitals into three nodes (mutual TLS, MPyC --ssl), recommend."""
    from tessera.workflows.environment import init_environment
    from tessera.workflows.nodes import stop_nodes

    passphrase = "test passphrase"
    monkeypatch.delenv("TESSERA_PASSPHRASE", raising=False)
    monkeypatch.delenv("TESSERA_PERSON", raising=False)
    env = init_environment(tmp_path / "home", nodes=3, passphrase=passphrase.encode())
    home = ["--home", str(env.home)]
    schema = str(cohort / "hiv.schema.yaml")
    try:
        for h in (1, 2, 3):
            csv = str(cohort / f"hiv-{h}.csv")
            args = ["table", "import", csv, "--name", "hiv", "--hospital", f"h{h}"]
            assert main([*args, "--schema", schema, *home]) == 0
        capsys.readouterr()
        patient = ["--patient", str(cohort / "patient.json")]
        args = ["recommend", "--table", "hiv", *patient, "--k", "25", "--profile", schema]
        # the job is signed with the researcher's key: no passphrase, no job
        assert main([*args, *home, "--json"]) != 0
        assert "TESSERA_PASSPHRASE" in capsys.readouterr().err
        monkeypatch.setenv("TESSERA_PASSPHRASE", "wrong passphrase")
        assert main([*args, *home, "--json"]) == 1
        assert "wrong passphrase" in capsys.readouterr().err
        monkeypatch.setenv("TESSERA_PASSPHRASE", passphrase)
        assert main([*args, *home, "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        # exact release: treatments given to fewer than the custodians' minimum group (5)
        # of the 25 are suppressed inside the MPC, as SQL suppresses small groups
        expected = _suppressed(_expected(cohort, k=25), 5)
        assert _strip(doc) == expected
        assert doc["min_group"] == 5
        hidden = [t for t in doc["treatments"] if t["suppressed"]]
        assert hidden and all("fewer than 5" in t["note"] for t in hidden)
        # Without --profile the recommend: section saved with the table's schema is used.
        assert main(["recommend", "--table", "hiv", *patient, "--k", "25", *home, "--json"]) == 0
        assert _strip(json.loads(capsys.readouterr().out)) == expected
        assert main(["recommend", "--table", "hiv", *patient, "--k", "25", *home]) == 0
        out = capsys.readouterr().out
        assert "not shown" in out and "minimum group size" in out
    finally:
        stop_nodes(env)

"""DICOM de-identification throughput: Tessera vs dicognito 0.19, same files, same run.

Two corpora: pydicom's bundled test files (every one both tools can parse) and a synthetic
300-slice CT series (512x512, 16-bit).  Each tool parses, de-identifies and encodes every
file from bytes in memory, single process; the best of ``--repeat`` passes counts.
Tessera runs with --keep-burned-in semantics (no quarantine shortcut) under the basic
profile.  A last line measures the CLI's process pool over the CT series on disk.

    python bench/dicom.py [--repeat 3] [--slices 300] [--json]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
from dicognito.anonymizer import Anonymizer
from pydicom import dcmread
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.uid import ExplicitVRLittleEndian

from envelope import Run, emit, figure, progress_to_stderr, result
from tessera.dicom import BatchSettings, Profile, Pseudonymizer, deidentify_bytes, run_batch
from tessera.dicom.stores import FolderIdentityStore, FolderSink


def pydicom_corpus() -> list[bytes]:
    """The bundled test files that dicognito and pydicom both handle."""
    blobs = []
    anonymizer = Anonymizer()
    for name in get_testdata_files():
        path = Path(name)
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            ds = dcmread(BytesIO(data))
            if "DirectoryRecordSequence" in ds or "SOPInstanceUID" not in ds:
                continue
            anonymizer.anonymize(ds)
            ds.save_as(BytesIO())
        except Exception:  # files dicognito cannot take are left out for both tools
            continue
        blobs.append(data)
    return blobs


def ct_series(slices: int) -> list[bytes]:
    """A synthetic CT series: one patient, one study, ``slices`` 512x512 slices."""
    template = dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 2000, size=(512, 512), dtype=np.uint16).tobytes()
    template.Rows = template.Columns = 512
    template.PixelData = pixels
    template.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    template.PatientName = "Synthetic^Patient"
    template.PatientID = "SYN-0001"
    template.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.9000"
    template.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.9001"
    out = []
    for i in range(slices):
        uid = f"1.2.826.0.1.3680043.8.498.9002.{i + 1}"
        template.SOPInstanceUID = uid
        template.file_meta.MediaStorageSOPInstanceUID = uid
        template.InstanceNumber = i + 1
        template.SliceLocation = float(i)
        buffer = BytesIO()
        template.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def dicognito_pass(blobs: list[bytes]) -> None:
    anonymizer = Anonymizer()
    for data in blobs:
        ds = dcmread(BytesIO(data))
        anonymizer.anonymize(ds)
        ds.save_as(BytesIO())


def tessera_pass(blobs: list[bytes]) -> None:
    profile, pseudo = Profile(), Pseudonymizer(bytes(range(32)))
    for data in blobs:
        outcome = deidentify_bytes(data, profile, pseudo, keep_burned_in=True)
        if outcome.status != "deidentified":
            raise SystemExit(f"tessera did not de-identify a file: {outcome.reason}")


def best_rate(run: Callable[[list[bytes]], None], blobs: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run(blobs)
        best = min(best, time.perf_counter() - start)
    return len(blobs) / best


def pool_rate(blobs: list[bytes], repeat: int) -> tuple[float, int]:
    """Files/s through run_batch (read + de-identify + write) with a process pool."""
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        paths = []
        for i, data in enumerate(blobs):
            path = src / f"{i:05d}.dcm"
            path.write_bytes(data)
            paths.append(path)
        settings = BatchSettings.of(Profile(), bytes(range(32)), keep_burned_in=True)
        best = float("inf")
        for r in range(repeat):
            start = time.perf_counter()
            run_batch(
                paths, settings, FolderSink(Path(tmp) / f"out{r}"),
                FolderIdentityStore(Path(tmp) / "ids"), workers=workers,
            )  # fmt: skip
            best = min(best, time.perf_counter() - start)
    return len(blobs) / best, workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    run = Run("dicom", __doc__, {"repeat": args.repeat, "slices": args.slices})
    with progress_to_stderr(args.json):
        rows = measure(args)
    if args.json:
        emit(run.document(rows))


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """Print the table as measured; the rows of the JSON document."""
    warnings.simplefilter("ignore")
    corpora = {
        "pydicom test files": pydicom_corpus(),
        f"CT series ({args.slices} x 512x512)": ct_series(args.slices),
    }
    rows = []
    print(f"{'corpus':32} {'files':>6} {'dicognito/s':>12} {'tessera/s':>10} {'ratio':>6}")
    for label, blobs in corpora.items():
        theirs = best_rate(dicognito_pass, blobs, args.repeat)
        ours = best_rate(tessera_pass, blobs, args.repeat)
        print(f"{label:32} {len(blobs):6d} {theirs:12.1f} {ours:10.1f} {ours / theirs:6.2f}")
        rows.append(
            result(
                f"{label}, {len(blobs)} files, in memory, one process",
                figure("Tessera", ours, "files/s"),
                figure("dicognito", theirs, "files/s"),
            )
        )
    rate, workers = pool_rate(corpora[f"CT series ({args.slices} x 512x512)"], args.repeat)
    print(
        f"tessera batch, {workers} worker processes, files on disk (read+write): {rate:.1f} files/s"
    )
    rows.append(
        result(
            f"CT series through the batch process pool ({workers} workers, read + write)",
            figure("Tessera run_batch", rate, "files/s"),
        )
    )
    return rows


if __name__ == "__main__":
    main()

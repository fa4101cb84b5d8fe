"""A synthetic CT series with a spherical "tumour" and its segmentation mask (seeded).

``write_phantom(folder)`` writes ``folder/ct/`` (one CT image per slice: air at -1000 HU,
an elliptical body of soft tissue around 40 HU, a sphere around 90 HU, Gaussian noise) and
``folder/mask/`` (the same geometry, 1 inside the sphere), and returns the truth computed
on the plaintext: voxel count, voxel and structure volume, mean intensity in the mask.

    python -m tessera.samples.ct_phantom OUT_DIR [--size 48] [--slices 16] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["phantom", "write_phantom"]

PIXEL_MM = 0.8
SLICE_MM = 2.5
_ROOT = "1.2.826.0.1.3680043.8.498.77"


def phantom(size: int = 48, slices: int = 16, *, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(HU as int16 [slice, row, column], mask as bool) of the phantom."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(
        np.arange(slices) * SLICE_MM,
        np.arange(size) * PIXEL_MM,
        np.arange(size) * PIXEL_MM,
        indexing="ij",
    )
    cy = cx = (size - 1) * PIXEL_MM / 2
    body = ((y - cy) / (0.45 * size * PIXEL_MM)) ** 2 + ((x - cx) / (0.38 * size * PIXEL_MM)) ** 2
    hu = np.where(body <= 1.0, 40.0, -1000.0)
    radius = 0.22 * size * PIXEL_MM
    centre = (slices * SLICE_MM / 2, cy + 0.1 * size * PIXEL_MM, cx - 0.05 * size * PIXEL_MM)
    inside = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2
    hu = np.where(inside, 90.0, hu) + rng.normal(0.0, 12.0, hu.shape)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), inside


def _dataset(pixels: np.ndarray, index: int, series: str, description: str, modality: str) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        UID,
        CTImageStorage,
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
    )

    uid = UID(f"{_ROOT}.{series}.{index + 1}")
    sop_class = CTImageStorage if modality == "CT" else SecondaryCaptureImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = f"{_ROOT}.1"
    ds.SeriesInstanceUID = f"{_ROOT}.{series}"
    ds.FrameOfReferenceUID = f"{_ROOT}.9"
    ds.PatientName = "Phantom^Synthetic"
    ds.PatientID = "PHANTOM-0001"
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.InstanceNumber = index + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0.0, 0.0, round(index * SLICE_MM, 3)]
    ds.PixelSpacing = [PIXEL_MM, PIXEL_MM]
    ds.SliceThickness = SLICE_MM
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024 if modality == "CT" else 0
    ds.RescaleSlope = 1
    stored = pixels.astype(np.int32) - int(ds.RescaleIntercept)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    return ds


def write_phantom(
    folder: Path, *, size: int = 48, slices: int = 16, seed: int = 7
) -> dict[str, Any]:
    """Write the series and mask under ``folder``; the truth (computed on the plaintext)."""
    hu, mask = phantom(size, slices, seed=seed)
    for sub, description, modality, volume in (
        ("ct", "synthetic CT", "CT", hu),
        ("mask", "tumour segmentation", "OT", mask.astype(np.int16)),
    ):
        out = folder / sub
        out.mkdir(parents=True, exist_ok=True)
        series = "2" if sub == "ct" else "3"
        for i in range(slices):
            ds = _dataset(volume[i], i, series, description, modality)
            ds.save_as(out / f"{sub}-{i + 1:03d}.dcm", enforce_file_format=True)
    voxel = PIXEL_MM * PIXEL_MM * SLICE_MM
    count = int(mask.sum())
    return {
        "shape": list(hu.shape),
        "voxels": count,
        "voxel_mm3": voxel,
        "volume_mm3": count * voxel,
        "mean_intensity": float(hu[mask].mean()),
    }


def main() -> None:
    """Command-line entry: write the phantom and print its truth as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(json.dumps(write_phantom(args.out, size=args.size, slices=args.slices, seed=args.seed)))


if __name__ == "__main__":
    main()

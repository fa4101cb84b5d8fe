"""Encrypt a CT series and a segmentation mask for an imaging job (``tessera he encrypt
SERIES --mask MASK``).

The series is a folder of single-frame DICOM images of one geometry; slices are ordered
along the normal of their orientation (``ImagePositionPatient`` projected on the cross
product of ``ImageOrientationPatient``), else by ``InstanceNumber``.  Intensities are the
stored values times ``RescaleSlope`` plus ``RescaleIntercept`` (HU for CT), clipped to a
window (default -1024 .. 3071 HU, the 12-bit CT range; the count of clipped voxels inside
the mask is reported).  The mask is a folder of DICOM images of the same geometry
(non-zero = inside the structure) or a NumPy ``.npy`` array of shape (slices, rows,
columns).  The voxel volume is the two pixel spacings times the slice spacing (from the
positions, else ``SpacingBetweenSlices``, else ``SliceThickness``).

Each voxel becomes one row of two streams: ``intensity`` (scaled by the window) and
``mask`` (0 or 1, binary sentinels): the server sums the mask times the voxel volume and
the mask times the scaled intensity; the owner reads the volume and the mean intensity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.errors import InputError, NotFoundError
from tessera.he.files import Bundle
from tessera.he.packing import Stream
from tessera.workflows.he import encrypt_values

__all__ = ["DEFAULT_WINDOW", "ImageSummary", "encrypt_image", "read_mask", "read_series"]

DEFAULT_WINDOW = (-1024.0, 3071.0)
MAX_VOXELS = 64 * 1024 * 1024


@dataclass(frozen=True)
class Series:
    """A CT series: intensities [slice, row, column] and the voxel size (mm)."""

    values: npt.NDArray[np.float64]
    spacing: tuple[float, float, float]  # slice, row, column

    @property
    def voxel_mm3(self) -> float:
        """One voxel's volume."""
        return self.spacing[0] * self.spacing[1] * self.spacing[2]


def _files(folder: Path, what: str) -> list[Any]:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    if not folder.is_dir():
        raise NotFoundError(f"no {what} folder at {folder}")
    out = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue  # not a DICOM file: other files may sit in the folder
        if "PixelData" in ds:
            out.append(ds)
    if not out:
        raise InputError(f"{folder} holds no DICOM image")
    return out


def _order(datasets: list[Any]) -> tuple[list[Any], float | None]:
    """Slices in spatial order, and the spacing between them when positions say."""
    try:
        orientation = np.asarray([float(v) for v in datasets[0].ImageOrientationPatient])
        normal = np.cross(orientation[:3], orientation[3:])
        where = [
            float(np.dot(normal, [float(v) for v in d.ImagePositionPatient])) for d in datasets
        ]
    except (AttributeError, TypeError, ValueError):
        ordered = sorted(datasets, key=lambda d: int(getattr(d, "InstanceNumber", 0) or 0))
        return ordered, None
    pairs = sorted(zip(where, range(len(datasets)), strict=True))
    ordered = [datasets[i] for _, i in pairs]
    gaps = np.diff([w for w, _ in pairs])
    if len(gaps) == 0:
        return ordered, None
    if np.any(gaps <= 0) or np.ptp(gaps) > 1e-3 * max(float(np.mean(gaps)), 1e-9):
        raise InputError("the series' slices are not evenly spaced (or two share a position)")
    return ordered, float(np.mean(gaps))


def read_series(folder: Path) -> Series:
    """The intensities and voxel size of the DICOM series in ``folder``."""
    ordered, gap = _order(_files(folder, "series"))
    first = ordered[0]
    shape = (int(first.Rows), int(first.Columns))
    if len(ordered) * shape[0] * shape[1] > MAX_VOXELS:
        raise InputError(f"the series has more than {MAX_VOXELS} voxels")
    slices = []
    for ds in ordered:
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise InputError("the series' images differ in size")
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
            raise InputError("multi-frame images are not supported; give single-frame slices")
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # pydicom raises many kinds for unreadable pixel data
            raise InputError(f"unreadable pixel data ({exc.__class__.__name__})") from None
        slices.append(pixels.astype(np.float64) * slope + intercept)
    try:
        rows_mm, cols_mm = (float(v) for v in first.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        raise InputError("the series states no PixelSpacing") from None
    if gap is None:
        gap = float(
            getattr(first, "SpacingBetweenSlices", None) or getattr(first, "SliceThickness", 0) or 0
        )
    if not all(math.isfinite(v) and v > 0 for v in (gap, rows_mm, cols_mm)):
        raise InputError("the series' voxel size is missing or not positive")
    return Series(np.stack(slices), (gap, rows_mm, cols_mm))


def read_mask(path: Path, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """The mask at ``path`` (a DICOM folder or a .npy array) as booleans of ``shape``."""
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise NotFoundError(f"no mask at {path}") from None
        except (ValueError, OSError):
            raise InputError(f"{path} is not a NumPy array file") from None
        mask = np.asarray(array) != 0
    else:
        ordered, _ = _order(_files(path, "mask"))
        try:
            mask = np.stack([ds.pixel_array != 0 for ds in ordered])
        except Exception as exc:
            raise InputError(f"unreadable mask pixel data ({exc.__class__.__name__})") from None
    if mask.shape != shape:
        raise InputError(f"the mask has shape {mask.shape}, the series {shape}")
    return np.asarray(mask, dtype=np.bool_)


@dataclass(frozen=True)
class ImageSummary:
    """What encrypting an image made."""

    out: Path
    shape: tuple[int, ...]
    voxels: int
    voxel_mm3: float
    window: tuple[float, float]
    clipped_in_mask: int
    chunks: int
    sentinels: int
    ciphertext_bytes: int
    data_digest: str

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "out": str(self.out),
            "shape": list(self.shape),
            "voxels": self.voxels,
            "voxel_mm3": self.voxel_mm3,
            "window": list(self.window),
            "clipped_in_mask": self.clipped_in_mask,
            "chunks": self.chunks,
            "sentinel_positions": self.sentinels,
            "bytes": self.ciphertext_bytes,
            "data_digest": self.data_digest,
        }


def encrypt_image(
    series_dir: Path,
    mask_path: Path,
    bundle: Bundle,
    out: Path,
    *,
    window: tuple[float, float] = DEFAULT_WINDOW,
) -> ImageSummary:
    """Encrypt a series and its mask under ``bundle`` into ``out``."""
    lo, hi = window
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError("the window must be two finite numbers LO < HI")
    series = read_series(series_dir)
    mask = read_mask(mask_path, series.values.shape)
    clipped = int(np.count_nonzero(((series.values < lo) | (series.values > hi)) & mask))
    values = np.stack([np.clip(series.values, lo, hi).ravel(), mask.ravel().astype(np.float64)], 1)
    streams = [Stream("intensity", lo, hi), Stream("mask", 0.0, 1.0, binary=True)]
    _, public, info = encrypt_values(
        values,
        streams,
        bundle,
        out,
        kind="image",
        source=series_dir.name,
        voxel_mm3=series.voxel_mm3,
    )
    return ImageSummary(
        out=out,
        shape=tuple(series.values.shape),
        voxels=int(values.shape[0]),
        voxel_mm3=series.voxel_mm3,
        window=(lo, hi),
        clipped_in_mask=clipped,
        chunks=info.layout.chunks,
        sentinels=len(info.layout.sentinels),
        ciphertext_bytes=len(public.raw),
        data_digest=public.digest,
    )

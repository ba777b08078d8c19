"""Write exports to disk: DICOM Part 10 files, NIfTI (RAS) or NPZ volumes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from .volume import Volume

log = logging.getLogger(__name__)


def write_dicom(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    """``<folder>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` for each dataset."""
    paths = []
    for ds in datasets:
        target = folder / str(ds.SeriesInstanceUID)
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_nifti(volume: Volume, path: Path) -> Path:
    """NIfTI-1 with the array transposed to (cols, rows, slices) and an RAS affine."""
    import nibabel as nib

    data = np.ascontiguousarray(np.transpose(volume.array, (2, 1, 0)))
    img = nib.Nifti1Image(data, volume.geometry.affine_ijk_ras())  # type: ignore[no-untyped-call]
    img.header.set_xyzt_units("mm")  # type: ignore[no-untyped-call]
    nib.save(img, str(path))
    return path


def write_npz(volume: Volume, path: Path) -> Path:
    """``array`` (DHW), ``spacing`` (DHW mm), ``origin`` (LPS), ``direction`` (3×3, DHW columns),
    ``affine``."""
    np.savez(
        path,
        array=volume.array,
        spacing=np.asarray(volume.spacing),
        origin=np.asarray(volume.origin),
        direction=volume.direction,
        affine=volume.affine,
        series_uid=np.asarray(volume.series_uid),
        sop_instance_uids=np.asarray(volume.sop_instance_uids),
        rescaled=np.asarray(volume.rescaled),
    )
    return path

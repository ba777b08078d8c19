"""Write a synthetic phantom as a DICOM CT Image Storage series (one file per slice, explicit VR little
endian).

Geometry follows :mod:`model.scan_geometry`: slice ``k`` of the phantom array is ``InstanceNumber k+1`` with
``ImagePositionPatient = geometry.slice_position(k)``. Pixels are 12-bit unsigned stored values
(``BitsAllocated 16, BitsStored 12, HighBit 11, PixelRepresentation 0``) with ``RescaleSlope 1``,
``RescaleIntercept -1024``. UIDs are derived from the phantom seed, so a seed always gives the same series.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

if TYPE_CHECKING:
    from model.phantoms import Phantom

logger = logging.getLogger(__name__)

STUDY_DATE = "20240101"
MANUFACTURER = "ahi-spleen-seg synthetic phantom"


@dataclass(frozen=True)
class SeriesUIDs:
    study: str
    series: str
    frame_of_reference: str

    @staticmethod
    def for_seed(seed: int, namespace: str = "ahi-spleen-seg-phantom") -> SeriesUIDs:
        def uid(kind: str) -> str:
            return str(generate_uid(entropy_srcs=[namespace, str(seed), kind]))

        return SeriesUIDs(study=uid("study"), series=uid("series"), frame_of_reference=uid("for"))


def _ds(value: float) -> str:
    """A DS string (max 16 chars) for ``value``."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if len(text) <= 16 else f"{value:.8g}"


def _series_dataset(phantom: Phantom, uids: SeriesUIDs) -> Dataset:
    g = phantom.geometry
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.PatientName = f"Phantom^{phantom.seed}"
    ds.PatientID = f"PHANTOM-{phantom.seed:06d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = uids.study
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = f"SYN{phantom.seed:07d}"[:16]
    ds.StudyDescription = "Synthetic abdominal CT phantom (not for clinical use)"
    ds.Modality = "CT"
    ds.SeriesInstanceUID = uids.series
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"Abdomen {phantom.phase} {g.spacing[0]:g}mm"
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = g.patient_position.value
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = MANUFACTURER
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AcquisitionNumber = 1
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    if phantom.phase != "native":
        ds.ContrastBolusAgent = "IV contrast (synthetic)"
    ds.PixelSpacing = [_ds(g.spacing[1]), _ds(g.spacing[2])]
    ds.ImageOrientationPatient = [_ds(v) for v in (*g.row_dir, *g.col_dir)]
    ds.SliceThickness = _ds(g.spacing[0])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = g.shape[1], g.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept = _ds(phantom.rescale_intercept)
    ds.RescaleSlope = _ds(phantom.rescale_slope)
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    return ds


def write_dicom_series(
    phantom: Phantom,
    out_dir: str | Path,
    uids: SeriesUIDs | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write one ``CT{k+1:04d}.dcm`` per slice into ``out_dir``; return the paths in slice order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    uids = uids or SeriesUIDs.for_seed(phantom.seed)
    base = _series_dataset(phantom, uids)
    g = phantom.geometry
    paths = []
    for k in range(g.shape[0]):
        ds = base.copy()
        sop_uid = str(generate_uid(entropy_srcs=[uids.series, str(k)]))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        pos = g.slice_position(k)
        ds.ImagePositionPatient = [_ds(v) for v in pos]
        ds.SliceLocation = _ds(float(np.dot(pos, g.slice_dir)))
        pixels = np.ascontiguousarray(phantom.stored[k], dtype=np.uint16)
        ds.SmallestImagePixelValue = int(pixels.min())
        ds.LargestImagePixelValue = int(pixels.max())
        ds.PixelData = pixels.tobytes()
        path = out / f"CT{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
        if progress is not None:
            progress(1)
    logger.info("wrote %d CT slices of phantom seed %d to %s", len(paths), phantom.seed, out)
    return paths

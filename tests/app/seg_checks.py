"""Checks of a written DICOM SEG against its source series, independent of the app's own code."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

from tests.support.dciodvfy import assert_conformant

SPLEEN_CATEGORY = ("91723000", "SCT")  # Anatomical Structure
SPLEEN_TYPE = ("78961009", "SCT")  # Spleen
SEG_DESCRIPTION = "AI generated Seg, not for clinical use."


def source_slices(source: Sequence[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """Source instances sorted by position along the slice normal."""
    iop = np.asarray(source[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(
        source, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float)))
    )


def check_seg(seg_path: Path, source: Sequence[pydicom.Dataset]) -> np.ndarray:
    """Assert the SEG is a valid spleen SEG of ``source``; return its mask on the source grid (sorted)."""
    seg = hd.seg.segread(seg_path)
    assert seg.get_segment_numbers() == [1]
    desc = seg.get_segment_description(1)
    assert desc.segment_label == "Spleen"
    assert (desc.segmented_property_category.value, desc.segmented_property_category.scheme_designator) == (
        SPLEEN_CATEGORY
    )
    assert (desc.segmented_property_type.value, desc.segmented_property_type.scheme_designator) == SPLEEN_TYPE
    assert seg.SeriesDescription == SEG_DESCRIPTION
    assert seg.SegmentationType == "BINARY"
    series_uid = str(source[0].SeriesInstanceUID)
    assert [str(item.SeriesInstanceUID) for item in seg.ReferencedSeriesSequence] == [series_uid]
    assert str(seg.StudyInstanceUID) == str(source[0].StudyInstanceUID)

    slices = source_slices(source)
    index_of = {str(ds.SOPInstanceUID): i for i, ds in enumerate(slices)}
    referenced = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    assert referenced and referenced <= set(index_of), "the SEG references instances outside the source"
    mask = np.zeros((len(slices), int(slices[0].Rows), int(slices[0].Columns)), dtype=np.uint8)
    pixels = seg.pixel_array.reshape(-1, mask.shape[1], mask.shape[2])
    for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        sop_uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        assert sop_uid in referenced, f"frame {frame + 1} derives from an unreferenced instance"
        src = slices[index_of[sop_uid]]
        position = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(position, np.asarray(src.ImagePositionPatient, dtype=float), atol=1e-3)
        ident = item if "SegmentIdentificationSequence" in item else seg.SharedFunctionalGroupsSequence[0]
        assert int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == 1
        mask[index_of[sop_uid]] = pixels[frame]
    if shutil.which("dciodvfy"):  # tests/conformance/test_seg_dciodvfy.py skips, with the fix, without it
        assert_conformant(Path(seg_path))
    return mask


def voxel_volume_mm3(source: Sequence[pydicom.Dataset]) -> float:
    """Row x column spacing (PixelSpacing) x distance between adjacent slice positions, from the headers."""
    slices = source_slices(source)
    gap = np.linalg.norm(
        np.asarray(slices[1].ImagePositionPatient, dtype=float)
        - np.asarray(slices[0].ImagePositionPatient, dtype=float)
    )
    row, col = (float(v) for v in slices[0].PixelSpacing)
    return row * col * float(gap)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total

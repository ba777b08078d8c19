"""The serving path's shortcuts give exactly what the SDK gives.

* ``sdk_voxels`` (AHISeriesToVolumeOperator's voxels from one array of stored values and attribute-only
  instances) equals ``DICOMSeriesToVolumeOperator.generate_voxel_data`` on the full P10 datasets, value and
  dtype, for every rescale / sign / bit-depth / LUT case the fast and the general branch cover.
* The SEG written from the slices that contain the segment has the same frames (pixels, positions, source
  instance per frame) as the SDK writer given the whole series.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from monai.deploy.core import Fragment
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from pydicom.uid import generate_uid

from app.bundle_model import ModelIdentity
from app.operators.ahi_series_to_volume_operator import sdk_voxels
from app.operators.spleen_seg_writer_operator import SpleenSegWriterOperator, spleen_segment_descriptions
from devstack.synthetic import SeriesSpec, write_series

CASES = {
    "ct_int16_intercept": SeriesSpec(slices=5, rescale_intercept=-1024.0),
    "ct_uint16_intercept": SeriesSpec(slices=5, signed=False, rescale_intercept=-1024.0),
    "uint16_no_shift": SeriesSpec(slices=4, signed=False, bits_stored=16),
    "int16_slope_2": SeriesSpec(slices=4, rescale_slope=2.0, rescale_intercept=-1000.0),
    "fractional_slope": SeriesSpec(slices=4, rescale_slope=0.37, rescale_intercept=-3.5),
    "uint8_mono1": SeriesSpec(
        slices=3, bits_allocated=8, bits_stored=8, signed=False, photometric="MONOCHROME1"
    ),
    "int8": SeriesSpec(slices=3, bits_allocated=8, bits_stored=8, signed=True),
}


def _series(datasets: list[pydicom.Dataset]) -> DICOMSeries:
    series = DICOMSeries(str(datasets[0].SeriesInstanceUID))
    for ds in datasets:
        series.add_sop_instance(ds)
    return series


def _no_rescale(ds: pydicom.Dataset) -> pydicom.Dataset:
    del ds.RescaleSlope, ds.RescaleIntercept
    return ds


@pytest.mark.parametrize("name", [*CASES, "no_rescale_attributes", "mixed_intercepts", "inverse_lut"])
def test_sdk_voxels_equal_the_sdk_volume_operator(name: str, tmp_path: Path) -> None:
    spec = CASES.get(name, CASES["ct_int16_intercept"])
    written = write_series(tmp_path, dataclasses.replace(spec, seed=len(name)))
    full = [pydicom.dcmread(p) for p in written.paths]
    if name == "no_rescale_attributes":
        full = [_no_rescale(ds) for ds in full]
    if name == "mixed_intercepts":
        for k, ds in enumerate(full):
            ds.RescaleIntercept = -1024 + 7 * k
    if name == "inverse_lut":
        for ds in full:
            ds.PresentationLUTShape = "INVERSE"
    volume_op = DICOMSeriesToVolumeOperator(Fragment(), name="sdk_volume")
    sdk_series = _series(full)
    volume_op.prepare_series(sdk_series)
    expected = volume_op.generate_voxel_data(sdk_series)

    ordered = [sop.get_native_sop_instance() for sop in sdk_series.get_sop_instances()]
    stored = np.stack([ds.pixel_array for ds in ordered])
    headers = []
    for ds in ordered:
        header = pydicom.Dataset(ds)
        del header.PixelData
        headers.append(header)
    got = sdk_voxels(stored, headers)
    assert got.dtype == expected.dtype, name
    np.testing.assert_array_equal(got, expected)


def test_seg_from_the_slices_with_the_segment_has_the_whole_series_seg_frames(tmp_path: Path) -> None:
    written = write_series(tmp_path / "ct", SeriesSpec(slices=24, rows=48, columns=48, seed=5))
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in written.paths]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    mask = np.zeros((24, 48, 48), dtype=np.uint8)
    mask[6:15, 10:30, 12:34] = 1
    mask[9, 20:25, 20:25] = 0
    identity = ModelIdentity("spleen", "1.0", tmp_path, "cpu", "0" * 64, generate_uid(), 1)
    ours = SpleenSegWriterOperator(Fragment(), model=identity, output_folder=tmp_path / "ours", name="ours")
    sdk = DICOMSegmentationWriterOperator(
        Fragment(),
        segment_descriptions=spleen_segment_descriptions(identity),
        output_folder=tmp_path / "sdk",
        omit_empty_frames=True,
        name="sdk",
    )
    ours.create_dicom_seg(mask, _series(datasets), tmp_path / "ours")
    sdk.create_dicom_seg(mask, _series(datasets), tmp_path / "sdk")
    (a,), (b,) = (list((tmp_path / d).glob("*.dcm")) for d in ("ours", "sdk"))
    seg_a, seg_b = hd.seg.segread(a), hd.seg.segread(b)
    assert int(seg_a.NumberOfFrames) == int(seg_b.NumberOfFrames) == 9
    np.testing.assert_array_equal(seg_a.pixel_array, seg_b.pixel_array)

    def frames(seg: hd.seg.Segmentation) -> list[tuple[str, tuple[float, ...]]]:
        return [
            (
                str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID),
                tuple(float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient),
            )
            for item in seg.PerFrameFunctionalGroupsSequence
        ]

    assert frames(seg_a) == frames(seg_b)
    assert {uid for *_, uid in seg_a.get_source_image_uids()} == {uid for uid, _ in frames(seg_a)}

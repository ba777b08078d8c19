"""Volume planning from metadata (no pixels): geometry checked against the synthetic writer's parameters."""

from __future__ import annotations

import random

import numpy as np
import pydicom
import pytest

from ahi_connector.errors import GeometryError
from ahi_connector.metadata import ImageSetMetadata
from ahi_connector.volume import plan_series
from devstack.synthetic import SeriesSpec, write_series
from tests.connector.ahi_json import document

DS_ID, IS_ID = "d" * 32, "i" * 32


def _frames(ds):
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return [{"ID": f"{ds.SOPInstanceUID[-6:]}f{k}", "FrameSizeInBytes": 1} for k in range(n)]


def _meta(datasets):
    frames = {ds.SOPInstanceUID: _frames(ds) for ds in datasets}
    return ImageSetMetadata.from_json(document(datasets, frames, "1.2.840.10008.1.2.4.201"), DS_ID, IS_ID)


@pytest.mark.parametrize("multiframe", [False, True])
def test_plan_matches_writer_parameters(tmp_path, multiframe):
    spec = SeriesSpec(
        slices=7,
        rows=8,
        columns=10,
        pixel_spacing=(0.6, 0.9),
        slice_spacing=1.25,
        origin=(-3.0, 4.0, 50.0),
        multiframe=multiframe,
        rescale_slope=2.0,
        rescale_intercept=-1024.0,
    )
    written = write_series(tmp_path, spec)
    datasets = [pydicom.dcmread(p) for p in written.paths]
    random.Random(1).shuffle(datasets)
    meta = _meta(datasets)
    plan = plan_series(meta, meta.series[written.series_uid])
    geo = plan.geometry
    assert len(plan.frames) == 7
    assert geo.spacing == pytest.approx((1.25, 0.6, 0.9))
    assert geo.origin == pytest.approx((-3.0, 4.0, 50.0))
    np.testing.assert_allclose(geo.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]], atol=1e-12)
    if not multiframe:
        assert [i.sop_instance_uid for i in plan.instances] == written.sop_instance_uids
    else:
        assert [f.index for f in plan.frames] == list(range(7))
    assert set(plan.slopes) == {2.0} and set(plan.intercepts) == {-1024.0} and plan.has_rescale


def test_missing_slice_is_a_clear_error(tmp_path):
    written = write_series(tmp_path, SeriesSpec(slices=6, rows=8, columns=8))
    datasets = [pydicom.dcmread(p) for p in written.paths]
    del datasets[2]
    meta = _meta(datasets)
    with pytest.raises(
        GeometryError, match=rf"series {written.series_uid} of image set i+ .*non-uniform slice spacing"
    ):
        plan_series(meta, meta.series[written.series_uid])


def test_multiframe_without_spacing_is_a_clear_error(tmp_path):
    written = write_series(tmp_path, SeriesSpec(slices=3, rows=8, columns=8, multiframe=True))
    ds = pydicom.dcmread(written.paths[0])
    del ds.SpacingBetweenSlices
    meta = _meta([ds])
    with pytest.raises(
        GeometryError, match=r"frame #1 .* of instance .* has no \(0020,0032\) Image Position"
    ):
        plan_series(meta, meta.series[written.series_uid])


def test_enhanced_multiframe_uses_per_frame_functional_groups(tmp_path):
    """Per-frame PlanePositionSequence (shuffled on purpose) and shared PixelMeasures / orientation."""
    written = write_series(tmp_path, SeriesSpec(slices=4, rows=8, columns=8, multiframe=True))
    ds = pydicom.dcmread(written.paths[0])
    del ds.SpacingBetweenSlices
    shared = pydicom.Dataset()
    measures, orient = pydicom.Dataset(), pydicom.Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.4], 3.0
    orient.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal: normal = (-1, 0, 0)
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orient]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for x in (10.0, 4.0, 7.0, 1.0):  # frame k at x; along the normal (-x) the order is 10, 7, 4, 1
        item, pos = pydicom.Dataset(), pydicom.Dataset()
        pos.ImagePositionPatient = [x, -5.0, 20.0]
        item.PlanePositionSequence = [pos]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    meta = _meta([ds])
    plan = plan_series(meta, meta.series[written.series_uid])
    assert [f.index for f in plan.frames] == [0, 2, 1, 3]
    assert plan.geometry.spacing == pytest.approx((3.0, 0.5, 0.4))
    assert plan.geometry.origin == pytest.approx((10.0, -5.0, 20.0))
    assert plan.geometry.normal == pytest.approx((-1.0, 0.0, 0.0))


def test_unsupported_bits_allocated_is_named(tmp_path):
    from ahi_connector.errors import UnsupportedFrameFormatError

    written = write_series(tmp_path, SeriesSpec(slices=1, rows=8, columns=8))
    ds = pydicom.dcmread(written.paths[0])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 12, 12, 11  # 1-bit is exported (bit-packed), 12 is not
    meta = _meta([ds])
    with pytest.raises(UnsupportedFrameFormatError, match=r"\(0028,0100\) Bits Allocated 12; the connector"):
        plan_series(meta, meta.series[written.series_uid])

"""Original DICOM files → ahi-local import → our export → identical pixels and attributes (except file
meta)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from ahi_connector import AHItoDICOM, ImageSetExporter
from devstack.synthetic import read_pixels
from tests.connector.conftest import CASES, dummy_session

LOSSY = {"rgb_jpeg_baseline"}  # decoded from the same bytes, then YBR→RGB: allow small rounding differences


def _compare_attributes(orig: pydicom.Dataset, out: pydicom.Dataset, name: str) -> None:
    exempt = {0x7FE00010}
    if name == "rgb_jpeg_baseline":
        assert orig.PhotometricInterpretation == "YBR_FULL_422" and out.PhotometricInterpretation == "RGB"
        exempt.add(0x00280004)
    for elem in orig:
        if elem.tag in exempt:
            continue
        assert elem.tag in out, f"{name}: {elem} missing"
        assert out[elem.tag].value == elem.value, f"{name}: {elem} != {out[elem.tag]}"
    assert {e.tag for e in out} - {e.tag for e in orig} <= {0x7FE00010, 0x00280006}, name


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip(name, imported, exporter, tmp_path):
    case = imported[name]
    datasets = exporter.to_datasets(case.datastore_id, case.image_set_id)
    assert [ds.SOPInstanceUID for ds in datasets] == case.written.sop_instance_uids
    for path, source, out in zip(case.written.paths, case.written.pixels, datasets, strict=True):
        orig = pydicom.dcmread(path)
        _compare_attributes(orig, out, name)
        assert out.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        written = tmp_path / f"{out.SOPInstanceUID}.dcm"
        out.save_as(written, enforce_file_format=True)
        back = pydicom.dcmread(written)
        expected = read_pixels(path)
        if name in LOSSY:
            assert np.abs(back.pixel_array.astype(int) - expected.astype(int)).max() <= 3, name
        else:
            np.testing.assert_array_equal(back.pixel_array, expected, err_msg=name)
            if "lossy" not in name:
                np.testing.assert_array_equal(back.pixel_array, source, err_msg=name)
        assert back.pixel_array.dtype == expected.dtype, name


def test_two_frame_instance_keeps_both_frames(imported, exporter):
    case = imported["multiframe_2"]
    (ds,) = exporter.to_datasets(case.datastore_id, case.image_set_id)
    assert ds.NumberOfFrames == 2 and len(ds.PixelData) == 2 * 64 * 64 * 2
    np.testing.assert_array_equal(ds.pixel_array, case.written.pixels[0])


@pytest.mark.parametrize("decoder", ["openjpeg", "jpeg2k"])
def test_other_backends_give_identical_datasets(decoder, imported, ahi_local):
    from ahi_connector import make_ahi_client

    case = imported["multiframe_signed"]
    with ImageSetExporter(make_ahi_client(ahi_local, session=dummy_session()), decoder=decoder) as ex:
        (ds,) = ex.to_datasets(case.datastore_id, case.image_set_id)
        assert ex.last_stats.backends == {decoder: 5}
    np.testing.assert_array_equal(ds.pixel_array, case.written.pixels[0])


def test_compat_class_by_study(imported, ahi_local, tmp_path):
    from tests.connector.conftest import STUDY_UID

    any_case = next(iter(imported.values()))
    with AHItoDICOM(
        client=None,
        endpoint_url=ahi_local,
        aws_access_key="testing",
        aws_secret_key="testing",
        region_name="us-east-1",
    ) as conv:
        series_map = conv.getImageSetToSeriesUIDMap(any_case.datastore_id, STUDY_UID)
        assert {m["SeriesInstanceUID"] for m in series_map} == {
            c.written.series_uid for c in imported.values()
        }
        ct = imported["ct_int16_12bit"]
        datasets = conv.DICOMizeImageSet(ct.datastore_id, ct.image_set_id)
        assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, 7))
        assert conv.getMetadata(ct.datastore_id, ct.image_set_id)["ImageSetID"] == ct.image_set_id
        assert conv.getMetadata(ct.datastore_id, "0" * 32) is None
        all_instances = conv.DICOMizeByStudyInstanceUID(any_case.datastore_id, STUDY_UID)
        assert len(all_instances) == sum(len(c.written.paths) for c in imported.values())
        assert conv.saveAsDICOM(datasets[0], str(tmp_path / "dcm"))
        assert pydicom.dcmread(tmp_path / "dcm" / f"{datasets[0].SOPInstanceUID}.dcm").Rows == 64
        assert conv.saveAsPngPIL(datasets[0], str(tmp_path / "png" / "a.png"))
        from PIL import Image

        assert Image.open(tmp_path / "png" / "a.png").size == (64, 64)


def test_search_paginates_and_finds_every_image_set(imported, exporter):
    from tests.connector.conftest import STUDY_UID

    any_case = next(iter(imported.values()))
    ids = exporter.find_image_sets_for_study(any_case.datastore_id, STUDY_UID)
    assert sorted(ids) == sorted({c.image_set_id for c in imported.values()})
    assert len(exporter.search_image_sets(any_case.datastore_id)) >= len(ids)

"""DICOMize on metadata JSON encoded here from real pydicom datasets written by the synthetic writer."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from ahi_connector.decoders import Codec
from ahi_connector.dicomize import make_dataset, output_photometric, set_pixel_data
from ahi_connector.errors import DicomizeError, SeriesNotFoundError
from ahi_connector.metadata import ImageSetMetadata, parse_metadata_blob
from devstack.synthetic import SeriesSpec, write_series
from tests.connector.ahi_json import document

DS_ID, IS_ID = "d" * 32, "i" * 32


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return write_series(tmp_path_factory.mktemp("dcm"), SeriesSpec(slices=3, rows=16, columns=16))


def _with_sequence(ds):
    item = pydicom.Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "T-D0050", "SRT", "Tissue"
    ds.AnatomicRegionSequence = [item]
    ds.add_new(0x00191001, "SS", [-5, 7])
    return ds


def test_attributes_round_trip_except_file_meta_and_pixels(series):
    originals = [_with_sequence(pydicom.dcmread(p)) for p in series.paths]
    meta = ImageSetMetadata.from_json(document(originals, {}, "1.2.840.10008.1.2.4.201"), DS_ID, IS_ID)
    assert meta.series_uids() == [series.series_uid]
    for orig, inst in zip(originals, meta.iter_instances(), strict=True):
        ds = make_dataset(meta, inst)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == orig.SOPInstanceUID
        for elem in orig:
            if elem.tag == 0x7FE00010:
                continue
            assert elem.tag in ds, elem
            assert ds[elem.tag].VR == elem.VR, elem
            assert ds[elem.tag].value == elem.value, elem
        assert set(ds.keys()) == {e.tag for e in orig if e.tag != 0x7FE00010}
        assert ds[0x00091012].value == b"\x00\x01\x02\xfe"


def test_instances_sorted_by_instance_number(series):
    originals = [pydicom.dcmread(p) for p in reversed(series.paths)]
    meta = ImageSetMetadata.from_json(document(originals, {}, "x"), DS_ID, IS_ID)
    assert [i.sop_instance_uid for i in meta.iter_instances()] == series.sop_instance_uids


def test_pixels_and_photometric_fix(series):
    orig = pydicom.dcmread(series.paths[0])
    orig.SamplesPerPixel, orig.PhotometricInterpretation, orig.BitsAllocated = 3, "YBR_FULL_422", 8
    orig.BitsStored, orig.HighBit, orig.PixelRepresentation = 8, 7, 0
    meta = ImageSetMetadata.from_json(document([orig], {}, "1.2.840.10008.1.2.4.50"), DS_ID, IS_ID)
    ds = make_dataset(meta, next(meta.iter_instances()))
    rgb = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    set_pixel_data(ds, rgb, Codec.JPEG)
    assert ds.PhotometricInterpretation == "RGB" and ds.PlanarConfiguration == 0
    assert ds["PixelData"].VR == "OB"
    np.testing.assert_array_equal(ds.pixel_array, rgb)
    assert output_photometric("YBR_RCT", Codec.HTJ2K, 3) == "RGB"
    assert output_photometric("YBR_FULL", Codec.HTJ2K, 3) == "YBR_FULL"


def test_bad_value_names_tag_and_instance(series):
    orig = pydicom.dcmread(series.paths[0])
    doc = document([orig], {}, "x")
    inst = doc["Study"]["Series"][series.series_uid]["Instances"][series.sop_instance_uids[0]]
    inst["DICOM"]["Rows"] = "sixteen"
    meta = ImageSetMetadata.from_json(doc, DS_ID, IS_ID)
    with pytest.raises(
        DicomizeError, match=r"instance .*\(0028,0010\) Rows: value 'sixteen' is not valid for VR US"
    ):
        make_dataset(meta, next(meta.iter_instances()))


def test_unknown_series_and_bad_blob(series):
    meta = ImageSetMetadata.from_json(document([pydicom.dcmread(series.paths[0])], {}, "x"), DS_ID, IS_ID)
    with pytest.raises(SeriesNotFoundError, match=r"series 1\.2\.3 is not in image set i+ \(datastore d+\)"):
        meta.get_series("1.2.3")
    from ahi_connector.errors import MetadataError

    with pytest.raises(
        MetadataError, match=r"metadata of image set i+ \(datastore d+\) is not valid gzip JSON"
    ):
        parse_metadata_blob(b"\x1f\x8bnot gzip", DS_ID, IS_ID)

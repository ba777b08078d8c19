"""The connector's general rules, each on metadata the real ahi-local encoder writes from pydicom datasets
(or on real codestreams): VR resolution per level, the empty-value rule, non-finite floats, ambiguous VRs,
colour forms, 1-bit pixels and the decoder fallback chain."""

from __future__ import annotations

import io
import json
import math
import warnings
import zlib

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.sequence import Sequence

from ahi_connector.decoders import Codec, DecoderRegistry, FrameSpec
from ahi_connector.decoders.registry import FrameDecodeFailure
from ahi_connector.dicomize import make_dataset, output_photometric, set_pixel_data
from ahi_connector.metadata import ImageSetMetadata
from devstack.ahi_local.metadata import build_document, flat_instance
from tests.conformance.corpus import compare
from tests.conformance.edge_cases import base, mono

DS_ID, IS_ID = "d" * 32, "i" * 32


def _round_trip(ds: Dataset, text: str | None = None) -> pydicom.Dataset:
    """ds -> ahi-local metadata JSON (as served, optionally edited as text) -> connector Dataset."""
    doc = build_document(DS_ID, IS_ID, [flat_instance(ds, None, [])])
    blob = text if text is not None else json.dumps(doc, allow_nan=False)
    meta = ImageSetMetadata.from_json(json.loads(blob), DS_ID, IS_ID)
    return make_dataset(meta, next(meta.iter_instances()))


def test_item_elements_resolve_with_the_items_own_dicomvrs() -> None:
    ds = base()
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091010, "OB", b"\x00\x10\x83\x00")  # same key at the top level, another VR
    item = Dataset()
    item.add_new(0x00090010, "LO", "ACME")
    item.add_new(0x00091010, "LO", "ABCD")
    inner = Dataset()
    inner.add_new(0x00290010, "LO", "ACME")
    inner.add_new(0x00291001, "US", [1, 65535])
    item.add_new(0x000910FE, "SQ", Sequence([inner]))
    ds.ReferencedSeriesSequence = Sequence([item])
    out = _round_trip(ds)
    got = out.ReferencedSeriesSequence[0]
    assert (got[0x00091010].VR, got[0x00091010].value) == ("LO", "ABCD")
    assert got[0x000910FE].value[0][0x00291001].value == [1, 65535]
    assert (out[0x00091010].VR, out[0x00091010].value) == ("OB", b"\x00\x10\x83\x00")
    assert compare(ds, out) == []


def test_one_empty_value_rule_for_every_numeric_vr() -> None:
    ds = base()
    ds.PatientWeight = None
    ds.SeriesNumber = None
    ds.ImagePositionPatient = ["1.5", "", "3"]
    ds.add_new(0x00091001, "US", None)
    ds.add_new(0x00091002, "FD", None)
    ds.add_new(0x00091003, "SL", [])
    ds.add_new(0x00090010, "LO", "ACME")
    out = _round_trip(ds)
    assert out.PatientWeight is None and out.SeriesNumber is None
    assert [str(v) for v in out.ImagePositionPatient] == ["1.5", "", "3"]
    assert out[0x00091001].value is None and out[0x00091002].value is None
    assert compare(ds, out) == []
    buffer = io.BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    assert compare(ds, pydicom.dcmread(io.BytesIO(buffer.getvalue()))) == []


def test_non_finite_floats_are_json_strings_and_bare_tokens_are_read_too() -> None:
    ds = base()
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "FD", [float("nan"), float("inf"), float("-inf"), 2.0])
    doc = build_document(DS_ID, IS_ID, [flat_instance(ds, None, [])])
    text = json.dumps(doc, allow_nan=False)  # strict JSON: no bare NaN / Infinity
    assert '["NaN", "Infinity", "-Infinity", 2.0]' in text
    for served in (text, text.replace('"NaN"', "NaN").replace('"-Infinity"', "-Infinity")):
        value = _round_trip(ds, served)[0x00091001].value
        assert math.isnan(value[0]) and value[1:] == [math.inf, -math.inf, 2.0]


def test_ambiguous_vr_follows_the_json_value() -> None:
    ds = base()
    mono(ds, bits=16, signed=True)
    del ds.PixelData
    lut = Dataset()
    lut.LUTDescriptor = [3, 0, 16]
    lut.add_new(0x00283006, "US", [1, 2, 3])
    ds.ModalityLUTSequence = Sequence([lut])
    doc = build_document(DS_ID, IS_ID, [flat_instance(ds, None, [])])
    item = doc["Study"]["Series"][ds.SeriesInstanceUID]["Instances"][ds.SOPInstanceUID]["DICOM"][
        "ModalityLUTSequence"
    ][0]
    item.pop("DICOMVRs", None)  # a producer that records no VR: the JSON numbers decide
    meta = ImageSetMetadata.from_json(json.loads(json.dumps(doc)), DS_ID, IS_ID)
    got = make_dataset(meta, next(meta.iter_instances())).ModalityLUTSequence[0]
    assert (got[0x00283006].VR, got[0x00283006].value) == ("US", [1, 2, 3])
    assert got.LUTDescriptor == [3, 0, 16]


@pytest.mark.parametrize(
    ("photometric", "codec", "expected"),
    [
        ("YBR_FULL_422", Codec.HTJ2K, "YBR_FULL"),  # native 4:2:2 re-encoded upsampled
        ("YBR_FULL_422", Codec.JPEG, "RGB"),
        ("YBR_FULL", Codec.JPEG, "RGB"),
        ("YBR_ICT", Codec.J2K, "RGB"),
        ("YBR_RCT", Codec.HTJ2K, "RGB"),
        ("YBR_FULL", Codec.HTJ2K, "YBR_FULL"),
        ("RGB", Codec.JPEG, "RGB"),
        ("MONOCHROME2", Codec.JPEG, "MONOCHROME2"),
    ],
)
def test_photometric_of_every_colour_form(photometric: str, codec: Codec, expected: str) -> None:
    samples = 1 if photometric.startswith("MONO") else 3
    assert output_photometric(photometric, codec, samples) == expected


def test_one_bit_pixels_are_packed_across_frames() -> None:
    ds = base()
    ds.Rows, ds.Columns, ds.NumberOfFrames = 5, 7, 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    frames = (np.arange(3 * 5 * 7) % 3 == 0).astype(np.uint8).reshape(3, 5, 7)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    set_pixel_data(ds, frames, Codec.NATIVE)
    assert ds.PixelData == pydicom.pixels.pack_bits(frames, pad=True)
    assert FrameSpec(5, 7, bits_allocated=1, bits_stored=1).nbytes == 35


def _jpeg_lossy_12bit() -> tuple[bytes, FrameSpec]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))
    data = next(generate_frames(ds.PixelData, number_of_frames=1))
    return data, FrameSpec(ds.Rows, ds.Columns, 1, ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation)


def test_fallback_chain_moves_on_when_a_backend_fails() -> None:
    """libjpeg rejects this real 12-bit JPEG Extended stream; libjpeg-turbo decodes it."""
    import imagecodecs

    data, spec = _jpeg_lossy_12bit()
    registry = DecoderRegistry()
    reference = imagecodecs.jpeg8_decode(data).astype(spec.dtype)
    pixels, backend = registry.decode_frame(Codec.JPEG, data, spec, zlib.crc32(reference) & 0xFFFFFFFF)
    assert backend == "libjpeg-turbo" and np.array_equal(pixels, reference)
    with pytest.raises(
        FrameDecodeFailure, match=r"libjpeg: .*; libjpeg-turbo: CRC32 of decoded pixels"
    ) as info:
        registry.decode_frame(Codec.JPEG, data, spec, 1234)
    assert info.value.checksum_only
    with pytest.raises(FrameDecodeFailure, match=r"libjpeg: .*; libjpeg-turbo: ") as info:
        registry.decode_frame(Codec.JPEG, data[:40], spec, None)
    assert not info.value.checksum_only

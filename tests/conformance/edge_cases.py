"""Generated DICOM edge cases the public test files do not cover, written as Part 10 files.

Each case is a real, pydicom-written file: every VR empty (private elements of every VR, Type 2 standard
attributes, DS/IS multi-values with empty items), private elements of every VR inside nested sequence items
with and without their Private Creator, Modality / VOI LUT sequences (explicit and implicit VR, 8 and 16-bit
LUT data), Explicit VR Big Endian with private elements, one file per Specific Character Set pydicom
supports, multi-frame Enhanced CT / MR with functional groups, 1-bit multi-frame pixels and a frame that
does not end on a byte boundary, colour in native YBR_FULL, RGB planar, RLE YBR_FULL, JPEG 2000 lossless
YBR_RCT and JPEG-LS, FD/FL NaN and Infinity, and a public or private sequence that is empty or holds an
empty item.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.charset import convert_encodings, decode_bytes, encode_string, python_encoding
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

STUDY_UID = "1.2.826.0.1.3680043.8.498.1300"
CREATOR = "ACME 1.1"

# One sample value per VR (for private elements of every VR) and its empty form.
SAMPLES: dict[str, object] = {
    "AE": "STORESCP",
    "AS": "042Y",
    "AT": 0x00100010,
    "CS": "ORIGINAL",
    "DA": "20240229",
    "DS": "1.50",
    "DT": "20240229123000.5",
    "FD": -2.5,
    "FL": 0.25,
    "IS": "-7",
    "LO": "ABCD",
    "LT": "long text",
    "OB": b"\x01\x02\x03",
    "OD": np.arange(2, dtype="<f8").tobytes(),
    "OF": np.arange(2, dtype="<f4").tobytes(),
    "OL": np.arange(2, dtype="<u4").tobytes(),
    "OV": np.arange(2, dtype="<u8").tobytes(),
    "OW": np.arange(3, dtype="<u2").tobytes(),
    "PN": "Doe^Jane",
    "SH": "short",
    "SL": -70000,
    "SS": -3,
    "ST": "short text",
    "SV": -(2**40),
    "TM": "123000.25",
    "UC": "unlimited chars",
    "UI": "1.2.3.4",
    "UL": 70000,
    "UN": b"\x05\x06",
    "UR": "http://example.com/a%20b",
    "US": 65535,
    "UT": "unlimited text",
    "UV": 2**40,
}


def base(sop_class: str = "1.2.840.10008.5.1.4.1.1.7", series: str | None = None) -> Dataset:
    """A minimal secondary-capture-like instance with its identifiers (no pixel data)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientID = "EDGE"
    ds.PatientName = "Edge^Case"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240229", "120000", "1"
    ds.ReferringPhysicianName = ""
    ds.AccessionNumber = ""
    ds.SeriesNumber, ds.InstanceNumber = "1", "1"
    ds.Manufacturer = "edge-cases"
    ds.Modality = "OT"
    return ds


def mono(
    ds: Dataset, rows: int = 4, cols: int = 5, bits: int = 16, signed: bool = False, frames: int = 1
) -> None:
    """Attach native monochrome pixel data."""
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
    arr = (np.arange(frames * rows * cols) * 37 % 251).astype(dtype).reshape(frames, rows, cols)
    if signed:
        arr = (arr - 100).astype(dtype)
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = arr.tobytes()


def _private_block(ds: Dataset, group: int, with_creator: bool, nested: Dataset | None = None) -> None:
    """Private elements of every VR in ``group`` (block 0x10), with or without the Private Creator."""
    if with_creator:
        ds.add_new((group << 16) | 0x0010, "LO", CREATOR)
    for offset, (vr, value) in enumerate(SAMPLES.items(), start=1):
        ds.add_new((group << 16) | 0x1000 | offset, vr, value)
    ds.add_new((group << 16) | 0x10FE, "SQ", Sequence([nested] if nested is not None else []))


def every_vr_empty() -> Dataset:
    ds = base()
    ds.add_new(0x00090010, "LO", CREATOR)
    for offset, vr in enumerate(SAMPLES, start=1):
        ds.add_new(0x00091000 | offset, vr, None)
    ds.add_new(0x000910FE, "SQ", Sequence())
    ds.PatientWeight = None
    ds.PatientSize = None
    ds.SliceThickness = None
    ds.SeriesNumber = None
    ds.ImagePositionPatient = ["1.0", "", "3"]  # a multi-value with an empty item
    ds.add_new(0x00200013, "IS", ["4", ""])  # Instance Number VM 1 written with an empty second value
    ds.ReferencedSeriesSequence = Sequence([Dataset()])  # an empty item
    ds.PatientBirthDate = ""
    mono(ds)
    return ds


def nested_private() -> Dataset:
    ds = base()
    inner = Dataset()
    _private_block(inner, 0x0029, with_creator=True)
    middle = Dataset()
    _private_block(middle, 0x0019, with_creator=True, nested=inner)
    no_creator = Dataset()
    _private_block(no_creator, 0x0011, with_creator=False)
    ref = Dataset()
    ref.SeriesInstanceUID = generate_uid()
    _private_block(ref, 0x0009, with_creator=True, nested=middle)
    ds.ReferencedSeriesSequence = Sequence([ref, no_creator])
    _private_block(ds, 0x0043, with_creator=True, nested=middle)
    mono(ds)
    return ds


def lut_sequences(bits: int) -> Dataset:
    ds = base()
    mono(ds, bits=bits, signed=False)
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, bits]
    lut.ModalityLUTType = "HU"
    if bits == 16:  # LUT Data "US or OW": as US numbers in one item, OW bytes in the other
        lut.add_new(0x00283006, "US", [0, 10, 20, 30])
    else:
        lut.add_new(0x00283006, "OW", np.array([0, 10, 20, 30], "<u2").tobytes())
    ds.ModalityLUTSequence = Sequence([lut])
    voi = Dataset()
    voi.LUTDescriptor = [3, 0, 16]
    voi.add_new(0x00283006, "OW", np.array([5, 500, 65535], "<u2").tobytes())
    voi.LUTExplanation = "ramp"
    ds.VOILUTSequence = Sequence([voi])
    ds.WindowCenter = ["40", "400"]
    ds.WindowWidth = ["80", "2000"]
    return ds


def big_endian_private() -> Dataset:
    ds = base()
    mono(ds, bits=16, signed=True)
    _private_block(ds, 0x0009, with_creator=True)
    ds.RealWorldValueMappingSequence = Sequence([Dataset()])
    ds.RealWorldValueMappingSequence[0].RealWorldValueSlope = 2.0
    ds.RealWorldValueMappingSequence[0].DoubleFloatRealWorldValueFirstValueMapped = 1.5
    return ds


CHARSET_SAMPLES = [
    "Müller^Zoë",
    "Dvořák^Łukasz",
    "Иванов^Пётр",
    "Παπαδόπουλος",
    "عبدالله",
    "כהן^שרה",
    "Yılmaz^Çağla",
    "สมชาย",
    "ﾔﾏﾀﾞ^ﾀﾛｳ",
    "山田^太郎",
    "王^小明",
    "김^민준",
    "Šťastný",
    "Ąžuolas",
    "Ħamrun",
    "Œuvre€",
]


# A name in the repertoire each set exists for (others: the first of CHARSET_SAMPLES the set can spell).
PREFERRED = {
    "ISO_IR 13": "ﾔﾏﾀﾞ^ﾀﾛｳ",
    "ISO 2022 IR 13": "ﾔﾏﾀﾞ^ﾀﾛｳ",
    "ISO 2022 IR 87": "山田^太郎",
    "ISO 2022 IR 149": "김^민준",
    "ISO 2022 IR 58": "王^小明",
    "ISO 2022 58": "王^小明",
    "GB18030": "王^小明",
    "GBK": "王^小明",
    "ISO 2022 GBK": "王^小明",
    "ISO_IR 192": "山田^Zoë=김",
}
ASCII_ONLY = ("", "ISO_IR 6", "ISO 2022 IR 6")  # pydicom reads these as Latin-1; keep them to ASCII


def charset_cases() -> dict[str, Dataset]:
    """One instance per Specific Character Set pydicom supports, with a name in that set's repertoire."""
    out = {}
    series = generate_uid()
    for term in sorted(python_encoding):
        terms = ["", term] if term.startswith("ISO 2022") and term != "ISO 2022 IR 6" else [term]
        candidates = ([PREFERRED[term]] if term in PREFERRED else []) + CHARSET_SAMPLES
        name = next((s for s in candidates if _encodes(s, terms)), "Plain^Ascii")
        if term in ASCII_ONLY:
            name = "Plain^Ascii"
        ds = base(series=series)
        ds.SpecificCharacterSet = terms if len(terms) > 1 else term
        if term == "":
            del ds.SpecificCharacterSet
        ds.PatientName = name
        ds.StudyDescription = name.replace("^", " ")
        ds.InstitutionName = name.split("^")[0]
        mono(ds, bits=8)
        out[f"charset_{term.replace(' ', '_') or 'default'}"] = ds
    return out


def _encodes(text: str, terms: list[str]) -> bool:
    """Whether the named set can spell ``text`` and pydicom writes it exactly (no replacement characters)."""
    if text.isascii():
        return False
    try:
        text.encode(python_encoding[terms[-1]])
    except (UnicodeError, LookupError):
        return False
    encodings = convert_encodings(terms)
    mode = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.RAISE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            encoded = encode_string(text, encodings)
        return decode_bytes(encoded, encodings, set()) == text
    except (UserWarning, UnicodeError, LookupError, ValueError):
        return False
    finally:
        pydicom.config.settings.writing_validation_mode = mode


def enhanced(kind: str) -> Dataset:
    sop = "1.2.840.10008.5.1.4.1.1.2.1" if kind == "ct" else "1.2.840.10008.5.1.4.1.1.4.1"
    ds = base(sop)
    ds.Modality = kind.upper()
    frames = 3
    mono(ds, rows=64, cols=48, bits=16, signed=kind == "ct", frames=frames)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = ["0.5", "0.5"]
    measures.SliceThickness = "1.25"
    shared.PixelMeasuresSequence = Sequence([measures])
    orient = Dataset()
    orient.ImageOrientationPatient = ["1", "0", "0", "0", "0.866025", "-0.5"]
    shared.PlaneOrientationSequence = Sequence([orient])
    if kind == "ct":
        trans = Dataset()
        trans.RescaleIntercept, trans.RescaleSlope, trans.RescaleType = "-1024", "1", "HU"
        shared.PixelValueTransformationSequence = Sequence([trans])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(frames):
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = ["-10.0", f"{k * 1.25:.2f}", "30"]
        item.PlanePositionSequence = Sequence([pos])
        content = Dataset()
        content.InStackPositionNumber = k + 1
        content.DimensionIndexValues = [1, k + 1]
        content.FrameAcquisitionDuration = 12.5
        item.FrameContentSequence = Sequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    index = Dataset()
    index.DimensionIndexPointer = 0x00209057
    index.FunctionalGroupPointer = 0x00209111
    ds.DimensionIndexSequence = Sequence([index])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.FrameOfReferenceUID = STUDY_UID + ".1"
    ds.PositionReferenceIndicator = ""
    ds.ContentDate, ds.ContentTime = "20240229", "120000"
    ds.AcquisitionDateTime = "20240229120000"
    ds.PatientPosition = "HFS"
    return ds


def one_bit(rows: int, cols: int, frames: int) -> Dataset:
    """1-bit pixels (as in SEG), packed 8 per byte across frame boundaries."""
    ds = base("1.2.840.10008.5.1.4.1.1.66.4")
    ds.Modality = "SEG"
    arr = (np.arange(frames * rows * cols) % 3 == 0).astype(np.uint8).reshape(frames, rows, cols)
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = pydicom.pixels.pack_bits(arr)
    return ds


def colour(photometric: str, planar: int = 0) -> Dataset:
    ds = base()
    rows, cols = 64, 48  # large enough for JPEG 2000's default 6 resolution levels
    arr = (np.arange(rows * cols * 3) * 29 % 256).astype(np.uint8).reshape(rows, cols, 3)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 3
    ds.PhotometricInterpretation = photometric
    ds.PlanarConfiguration = planar
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (np.moveaxis(arr, -1, 0) if planar else arr).tobytes()
    return ds


def float_pixels(double: bool) -> Dataset:
    """Float / Double Float Pixel Data (e.g. a parametric map) holding NaN and -Infinity samples."""
    ds = base("1.2.840.10008.5.1.4.1.1.30")
    rows, cols, frames = 4, 6, 2
    arr = (np.arange(frames * rows * cols, dtype="<f8" if double else "<f4") / 7 - 1).reshape(
        frames, rows, cols
    )
    arr[0, 0, 0], arr[1, 2, 3] = np.nan, -np.inf
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 64 if double else 32
    if double:
        ds.DoubleFloatPixelData = arr.tobytes()
    else:
        ds.FloatPixelData = arr.tobytes()
    return ds


def non_finite() -> Dataset:
    ds = base()
    mono(ds)
    ds.add_new(0x00090010, "LO", CREATOR)
    ds.add_new(0x00091001, "FD", [float("nan"), float("inf"), float("-inf"), 1.0])
    ds.add_new(0x00091002, "FL", float("-inf"))
    item = Dataset()
    item.add_new(0x00190010, "LO", CREATOR)
    item.add_new(0x00191001, "FD", float("nan"))
    ds.add_new(0x000910FE, "SQ", Sequence([item]))
    return ds


def cases() -> dict[str, tuple[Dataset, str, Callable[[Dataset], None] | None]]:
    """Name -> (dataset, transfer syntax to write, optional compression step)."""

    def compress(syntax: str, **kw: object) -> Callable[[Dataset], None]:
        def run(ds: Dataset) -> None:
            ds.compress(syntax, **kw)

        return run

    def compress_then(syntax: str, photometric: str) -> Callable[[Dataset], None]:
        def run(ds: Dataset) -> None:  # the codestream carries the colour transform; say so
            ds.compress(syntax)
            ds.PhotometricInterpretation = photometric

        return run

    out: dict[str, tuple[Dataset, str, Callable[[Dataset], None] | None]] = {
        "every_vr_empty": (every_vr_empty(), ExplicitVRLittleEndian, None),
        "every_vr_empty_implicit": (every_vr_empty(), ImplicitVRLittleEndian, None),
        "nested_private": (nested_private(), ExplicitVRLittleEndian, None),
        "nested_private_implicit": (nested_private(), ImplicitVRLittleEndian, None),
        "nested_private_big_endian": (nested_private(), ExplicitVRBigEndian, None),
        "lut_16_explicit": (lut_sequences(16), ExplicitVRLittleEndian, None),
        "lut_16_implicit": (lut_sequences(16), ImplicitVRLittleEndian, None),
        "lut_8_explicit": (lut_sequences(8), ExplicitVRLittleEndian, None),
        "big_endian_private": (big_endian_private(), ExplicitVRBigEndian, None),
        "enhanced_ct": (enhanced("ct"), ExplicitVRLittleEndian, None),
        "enhanced_mr": (enhanced("mr"), ExplicitVRLittleEndian, None),
        "enhanced_ct_j2k": (enhanced("ct"), ExplicitVRLittleEndian, compress(JPEG2000Lossless)),
        "one_bit_multiframe": (one_bit(6, 8, 3), ExplicitVRLittleEndian, None),
        "one_bit_frames_share_bytes": (one_bit(5, 7, 3), ExplicitVRLittleEndian, None),
        "one_bit_implicit": (one_bit(6, 8, 2), ImplicitVRLittleEndian, None),
        "one_bit_odd_size": (one_bit(5, 7, 1), ExplicitVRLittleEndian, None),
        "ybr_full_native": (colour("YBR_FULL"), ExplicitVRLittleEndian, None),
        "rgb_planar_native": (colour("RGB", planar=1), ExplicitVRLittleEndian, None),
        "ybr_full_rle": (colour("YBR_FULL"), ExplicitVRLittleEndian, compress(RLELossless)),
        "rgb_j2k_rct": (colour("RGB"), ExplicitVRLittleEndian, compress(JPEG2000Lossless)),
        "ybr_rct_j2k": (colour("RGB"), ExplicitVRLittleEndian, compress_then(JPEG2000Lossless, "YBR_RCT")),
        "rgb_jpegls": (colour("RGB"), ExplicitVRLittleEndian, compress(JPEGLSLossless)),
        "non_finite_floats": (non_finite(), ExplicitVRLittleEndian, None),
        "float_pixel_data": (float_pixels(double=False), ExplicitVRLittleEndian, None),
        "double_float_pixel_data": (float_pixels(double=True), ExplicitVRLittleEndian, None),
    }
    for name, ds in charset_cases().items():
        out[name] = (ds, ExplicitVRLittleEndian, None)
    return out


def write_cases(folder: Path) -> list[Path]:
    """Write every case to ``folder/<name>.dcm``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (ds, syntax, step) in cases().items():
            ds.file_meta.TransferSyntaxUID = syntax
            if step is not None:
                step(ds)
            path = folder / f"{name}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths

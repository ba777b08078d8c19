"""Write synthetic CT-like series as DICOM Part 10 files, in many pixel encodings.

One :class:`SeriesSpec` describes a series (size, geometry, pixel format, transfer syntax, identifiers);
:func:`write_series` writes it and returns a :class:`SyntheticSeries` with the UIDs, the paths and the source
pixel arrays (for lossless syntaxes these are exactly what a decoder must give back).

Geometry: axial slices, ImageOrientationPatient ``[1,0,0,0,1,0]`` (LPS), slice ``k`` at
``origin + k * slice_spacing`` along +z; PixelSpacing is ``[row spacing, column spacing]``. A multi-frame
instance stores all slices as frames with the first slice's position (plus SpacingBetweenSlices).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

logger = logging.getLogger(__name__)

NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
LOSSY_SYNTAXES = (JPEGBaseline8Bit, JPEG2000)
SUPPORTED_SYNTAXES = (
    *NATIVE_SYNTAXES,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)


@dataclasses.dataclass(frozen=True)
class SeriesSpec:
    """What to generate. Defaults: 8 axial 64×64 int16 CT slices, 12 bits stored, explicit VR LE."""

    slices: int = 8
    rows: int = 64
    columns: int = 64
    pixel_spacing: tuple[float, float] = (0.75, 0.75)
    slice_spacing: float = 2.5
    origin: tuple[float, float, float] = (-24.0, -24.0, 100.0)
    bits_allocated: int = 16
    bits_stored: int = 12
    signed: bool = True
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    photometric: str = "MONOCHROME2"  # MONOCHROME1, MONOCHROME2 or RGB
    transfer_syntax: str = ExplicitVRLittleEndian
    multiframe: bool = False
    modality: str = "CT"
    patient_id: str = "SYN-0001"
    patient_name: str = "Synthetic^Patient"
    study_uid: str | None = None
    series_uid: str | None = None
    frame_of_reference_uid: str | None = None
    study_date: str = "20240102"
    study_time: str = "101500"
    accession_number: str = "ACC0001"
    study_id: str = "1"
    series_number: int = 1
    series_description: str = "synthetic axial"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.transfer_syntax not in SUPPORTED_SYNTAXES:
            raise ValueError(f"transfer syntax {self.transfer_syntax} is not one of {SUPPORTED_SYNTAXES}")
        if self.bits_allocated not in (8, 16) or not 1 <= self.bits_stored <= self.bits_allocated:
            raise ValueError(
                f"(0028,0100) Bits Allocated {self.bits_allocated} / "
                f"(0028,0101) Bits Stored {self.bits_stored} "
                "must be 8 or 16 with 1 <= stored <= allocated"
            )
        if self.photometric == "RGB" and (self.bits_allocated != 8 or self.signed):
            raise ValueError("RGB series must be 8-bit unsigned")
        if self.transfer_syntax == JPEGBaseline8Bit and (self.bits_allocated != 8 or self.signed):
            raise ValueError("JPEG Baseline (Process 1) needs 8-bit unsigned pixels")


@dataclasses.dataclass(frozen=True)
class SyntheticSeries:
    """What :func:`write_series` wrote. ``pixels[i]`` is the source array of ``paths[i]`` (frames first if
    multi-frame), before any lossy compression."""

    spec: SeriesSpec
    study_uid: str
    series_uid: str
    sop_instance_uids: list[str]
    paths: list[Path]
    pixels: list[np.ndarray]


def _value_range(spec: SeriesSpec) -> tuple[int, int]:
    if spec.signed:
        return -(1 << (spec.bits_stored - 1)), (1 << (spec.bits_stored - 1)) - 1
    return 0, (1 << spec.bits_stored) - 1


def make_slice(spec: SeriesSpec, index: int) -> np.ndarray:
    """A deterministic CT-like slice: an ellipse 'body' with a bright disc, noise, and both range extremes."""
    lo, hi = _value_range(spec)
    rng = np.random.default_rng(spec.seed * 100_003 + index)
    yy, xx = np.mgrid[0 : spec.rows, 0 : spec.columns].astype(np.float64)
    cy, cx = (spec.rows - 1) / 2, (spec.columns - 1) / 2
    body = ((yy - cy) / (0.42 * spec.rows)) ** 2 + ((xx - cx) / (0.45 * spec.columns)) ** 2 <= 1.0
    span = hi - lo
    img = np.full((spec.rows, spec.columns), lo + 0.05 * span)
    img[body] = lo + 0.45 * span
    r = 0.12 * min(spec.rows, spec.columns) * (1 + 0.5 * np.sin(index / 3))
    disc = (yy - cy * 0.8) ** 2 + (xx - cx * 1.2) ** 2 <= r * r
    img[disc] = lo + 0.8 * span
    img += rng.normal(0, 0.02 * span, img.shape)
    arr = np.clip(np.rint(img), lo, hi)
    arr[0, 0], arr[-1, -1] = lo, hi
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}
    arr = arr.astype(dtype[(spec.bits_allocated, spec.signed)])
    if spec.photometric == "RGB":
        arr = np.stack([arr, np.flipud(arr), np.fliplr(arr)], axis=-1)
    return arr


def _base_dataset(spec: SeriesSpec, study_uid: str, series_uid: str, for_uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = spec.study_date
    ds.StudyTime = spec.study_time
    ds.AccessionNumber = spec.accession_number
    ds.StudyID = spec.study_id
    ds.StudyDescription = "synthetic study"
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = spec.series_number
    ds.SeriesDescription = spec.series_description
    ds.Modality = spec.modality
    ds.BodyPartExamined = "ABDOMEN"
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "ahi-spleen-seg tests"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = list(spec.pixel_spacing)
    ds.SliceThickness = spec.slice_spacing
    ds.Rows, ds.Columns = spec.rows, spec.columns
    ds.SamplesPerPixel = 3 if spec.photometric == "RGB" else 1
    if spec.photometric == "RGB":
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = spec.photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = spec.bits_allocated, spec.bits_stored, spec.bits_stored - 1
    ds.PixelRepresentation = 1 if spec.signed else 0
    if spec.photometric != "RGB":
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = (
            spec.rescale_slope,
            spec.rescale_intercept,
            "HU",
        )
        ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.KVP = 120
    ds.add_new(0x00091010, "LO", "AHI-SPLEEN PRIVATE")  # private creator
    ds.add_new(0x00091011, "DS", "1.5")
    ds.add_new(0x00091012, "OB", b"\x00\x01\x02\xfe")
    return ds


def _encode_frames(spec: SeriesSpec, ds: Dataset, frames: Sequence[np.ndarray]) -> None:
    """Set ds.PixelData (+ photometric for JPEG baseline RGB) for ``frames`` in ``spec.transfer_syntax``."""
    ts = UID(spec.transfer_syntax)
    stack = np.stack(frames) if len(frames) > 1 else frames[0]
    if ts in NATIVE_SYNTAXES:
        ds.PixelData = stack.astype(stack.dtype.newbyteorder("<"), copy=False).tobytes()
        return
    if ts in (JPEG2000Lossless, JPEG2000, RLELossless):
        if ts == JPEG2000:
            ds.compress(ts, stack, j2k_cr=[15])
        else:
            ds.compress(ts, stack)
        return
    if ts == JPEGBaseline8Bit:
        encoded = [bytes(imagecodecs.jpeg8_encode(f, level=90)) for f in frames]
        if spec.photometric == "RGB":
            ds.PhotometricInterpretation = "YBR_FULL_422"
    else:  # JPEG lossless SV1 codes BitsStored-bit unsigned words (two's complement if signed)
        mask = (1 << spec.bits_stored) - 1
        unsigned = np.uint8 if spec.bits_allocated == 8 else np.uint16
        encoded = [
            bytes(
                imagecodecs.jpeg8_encode(
                    (np.asarray(f.view(unsigned)) & mask).astype(unsigned),
                    lossless=True,
                    predictor=1,
                    bitspersample=spec.bits_stored,
                )
            )
            for f in frames
        ]
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"


def _write(ds: Dataset, spec: SeriesSpec, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(spec.transfer_syntax)
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def write_series(folder: str | Path, spec: SeriesSpec | None = None) -> SyntheticSeries:
    """Write one series into ``folder`` (created) and return what was written."""
    spec = spec or SeriesSpec()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = spec.study_uid or generate_uid()
    series_uid = spec.series_uid or generate_uid()
    for_uid = spec.frame_of_reference_uid or generate_uid()
    slices = [make_slice(spec, k) for k in range(spec.slices)]
    groups = [slices] if spec.multiframe else [[s] for s in slices]
    paths: list[Path] = []
    sop_uids: list[str] = []
    pixels: list[np.ndarray] = []
    for number, frames in enumerate(groups, start=1):
        ds = _base_dataset(spec, study_uid, series_uid, for_uid)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        z = spec.origin[2] + (number - 1) * spec.slice_spacing
        ds.ImagePositionPatient = [spec.origin[0], spec.origin[1], z]
        ds.SliceLocation = z
        if spec.multiframe:
            ds.NumberOfFrames = len(frames)
            ds.SpacingBetweenSlices = spec.slice_spacing
        _encode_frames(spec, ds, frames)
        path = folder / f"{series_uid}_{number:04d}.dcm"
        _write(ds, spec, path)
        paths.append(path)
        sop_uids.append(ds.SOPInstanceUID)
        pixels.append(np.stack(frames) if spec.multiframe else frames[0])
    logger.debug("wrote %d files of series %s to %s", len(paths), series_uid, folder)
    return SyntheticSeries(spec, study_uid, series_uid, sop_uids, paths, pixels)


def read_pixels(path: str | Path) -> np.ndarray:
    """Decode a file's pixel data with pydicom (frames first for multi-frame), without modality LUTs."""
    return pydicom.dcmread(path).pixel_array

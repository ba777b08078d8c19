"""Metadata JSON (+ decoded frames) → pydicom Datasets with native, Explicit VR Little Endian pixel data.

Attributes merge Patient, Study, Series and Instance levels (later levels win). One VR rule for the top level
and every sequence item: the VR recorded in that level's own ``DICOMVRs`` (the instance's for the top level,
the item's ``DICOMVRs`` object inside an item), else pydicom's dictionary, else UN; an ambiguous dictionary VR
(``US or SS``, ``OB or OW``, ``US or SS or OW``) resolves by the JSON value (numbers: US, or SS when Pixel
Representation is 1; base64 text: OW/OB). One empty-value rule for every VR: ``None``, ``""`` and ``[]`` are
the VR's empty value, and an empty item of a DS/IS multi-value stays an empty item. Binary VRs are base64;
FL/FD accept numbers and the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; sequences recurse. Group
Length (gggg,0000) elements are dropped: they are retired and describe an encoding the export does not keep.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian
from pydicom.valuerep import DSfloat

from .decoders.base import Codec
from .errors import DicomizeError
from .metadata import ImageSetMetadata, InstanceInfo, as_int

log = logging.getLogger(__name__)

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_TOP_LEVEL_SKIP = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # pixel data: attached from the frames
_DELIMITERS = frozenset({0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD})
_VRS_KEY = "DICOMVRs"
_YBR = ("YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT")
_SUBSAMPLED_FULL = ("YBR_FULL_422",)
IMPLEMENTATION_VERSION = "AHI_CONNECTOR_1"


def _tag_of(key: str) -> int | None:
    if _HEX_TAG.match(key):
        return int(key, 16)
    return keyword_dict.get(key)


def _is_number(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(v is None or _is_number(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resolve_vr(key: str, tag: int, vrs: Mapping[str, str], value: Any, context: Mapping[str, Any]) -> str:
    """The VR of one element: its level's ``DICOMVRs`` entry, else the dictionary (ambiguous VRs resolved by
    the value's JSON type), else UN. The same rule at the top level and inside every sequence item."""
    vr = vrs.get(key) or vrs.get(f"{tag:08X}") or vrs.get(f"{tag:08x}")
    if not vr:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    if " or " in vr:
        options = vr.split(" or ")
        if _is_number(value) and ("US" in options or "SS" in options):
            signed = as_int(context.get("PixelRepresentation"), 0) == 1
            vr = "SS" if signed and "SS" in options else ("US" if "US" in options else "SS")
        elif "OW" in options:
            vr = "OW"
        else:
            vr = options[0]
    return vr


def _binary(value: Any, where: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, list):
        return b"".join(_binary(v, where) for v in value)
    if isinstance(value, Mapping) and "InlineBinary" in value:
        value = value["InlineBinary"]
    if not isinstance(value, str):
        raise DicomizeError(f"{where}: binary value {value!r:.60} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DicomizeError(f"{where}: binary value is not base64 ({exc})") from exc


_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
_NON_FINITE = {
    "nan": float("nan"),
    "infinity": float("inf"),
    "-infinity": float("-inf"),
    "inf": float("inf"),
    "-inf": float("-inf"),
}


def is_empty(value: Any) -> bool:
    """The one empty-value rule: JSON null, an empty string, an empty list, or a list of only those."""
    if value is None or value == "" or value == []:
        return True
    return isinstance(value, list) and all(v is None or v == "" for v in value)


def _scalar(vr: str, value: Any) -> Any:
    if vr in ("DS", "IS") and (value is None or (isinstance(value, str) and not value.strip())):
        return ""  # an empty item of a multi-valued DS/IS stays empty
    if vr in _INT_VRS:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value} is not an integer")
        return int(value)
    if vr in _FLOAT_VRS:
        if isinstance(value, str) and value.strip().lower() in _NON_FINITE:
            return _NON_FINITE[value.strip().lower()]
        return float(value)
    if vr in ("DS", "IS") and isinstance(value, str):
        float(value)  # validates; the original string is kept
        return value
    if vr == "PN" and isinstance(value, Mapping):
        return value.get("Alphabetic", "")
    if vr == "AT" and isinstance(value, str):
        return int(value, 16)
    if vr == "DS" and isinstance(value, float):
        return DSfloat(value, auto_format=True)
    if vr == "IS" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _value(vr: str, value: Any, context: Mapping[str, Any], where: str) -> Any:
    if vr == "SQ":
        if value is None or value == []:
            return Sequence()
        items = value if isinstance(value, list) else [value]
        return Sequence([build_attributes(item or {}, context, where) for item in items])
    if is_empty(value):
        return empty_value_for_VR(vr)
    if vr in BINARY_VRS:
        return _binary(value, where)
    if isinstance(value, list):
        out = [_scalar(vr, v) for v in value]
        return out[0] if len(out) == 1 else out
    return _scalar(vr, value)


def add_attributes(
    ds: Dataset,
    attrs: Mapping[str, Any],
    vrs: Mapping[str, str],
    context: Mapping[str, Any],
    where: str,
    top_level: bool = True,
) -> None:
    """Add every attribute of one level (top level or one sequence item) to ``ds``, VRs from ``vrs`` (that
    level's own ``DICOMVRs``); unknown keywords are logged and skipped."""
    for key, raw in attrs.items():
        if key == _VRS_KEY:
            continue
        tag = _tag_of(key)
        if tag is None:
            log.warning("%s: %r is neither a DICOM keyword nor an 8-hex tag; attribute skipped", where, key)
            continue
        group_length = tag & 0xFFFF == 0
        if tag in _DELIMITERS or group_length or (top_level and (tag in _TOP_LEVEL_SKIP or tag >> 16 == 2)):
            continue
        vr = resolve_vr(key, tag, vrs, raw, context)
        label = f"{where}, ({tag >> 16:04X},{tag & 0xFFFF:04X}) {key}"
        try:
            ds.add(DataElement(tag, vr, _value(vr, raw, context, label)))
        except DicomizeError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise DicomizeError(f"{label}: value {raw!r:.200} is not valid for VR {vr}: {exc}") from exc


def build_attributes(item: Mapping[str, Any], context: Mapping[str, Any], where: str) -> Dataset:
    """One sequence item: its attributes with the VRs of its own ``DICOMVRs`` object."""
    ds = Dataset()
    vrs = item.get(_VRS_KEY) or {}
    if not isinstance(vrs, Mapping):
        raise DicomizeError(f"{where}: the item's DICOMVRs is a {type(vrs).__name__}, expected an object")
    add_attributes(ds, item, vrs, context, where, top_level=False)
    return ds


def merged_attributes(meta: ImageSetMetadata, inst: InstanceInfo) -> dict[str, Any]:
    """Patient, Study, Series and Instance level attributes, later levels winning."""
    series = meta.series[inst.series_uid]
    merged: dict[str, Any] = {}
    for level in (meta.patient, meta.study, series.dicom, inst.dicom):
        merged.update(level)
    return merged


def output_photometric(original: str | None, codec: Codec | None, samples: int) -> str | None:
    """Photometric Interpretation of the native pixels we emit, for every colour form: decoders return RGB
    for colour JPEG (YCbCr converted after verification) and J2K/HTJ2K with a colour transform (YBR_ICT /
    YBR_RCT); chroma-subsampled YBR_FULL_422 comes back upsampled to full resolution, i.e. YBR_FULL."""
    if samples != 3 or original is None:
        return original
    if codec is Codec.JPEG and original in _YBR:
        return "RGB"
    if codec in (Codec.J2K, Codec.HTJ2K) and original in ("YBR_ICT", "YBR_RCT"):
        return "RGB"
    if original in _SUBSAMPLED_FULL:
        return "YBR_FULL"
    return original


def make_dataset(meta: ImageSetMetadata, inst: InstanceInfo) -> FileDataset:
    """Attributes and file meta of one instance, without pixel data."""
    where = (
        f"instance {inst.sop_instance_uid} (series {inst.series_uid}, image set {meta.image_set_id}, "
        f"datastore {meta.datastore_id})"
    )
    merged = merged_attributes(meta, inst)
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = UID(merged.get("SOPClassUID") or "1.2.840.10008.5.1.4.1.1.7")
    file_meta.MediaStorageSOPInstanceUID = UID(inst.sop_instance_uid)
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds = FileDataset("", {}, file_meta=file_meta, preamble=b"\0" * 128)
    add_attributes(ds, merged, inst.vrs, merged, where)
    if "SOPInstanceUID" not in ds:
        ds.SOPInstanceUID = inst.sop_instance_uid
    if "SeriesInstanceUID" not in ds:
        ds.SeriesInstanceUID = inst.series_uid
    return ds


def set_pixel_data(ds: Dataset, pixels: np.ndarray, codec: Codec | None) -> None:
    """Attach native little-endian pixels (frames, rows, cols[, samples]) and fix the pixel module
    attributes."""
    if as_int(ds.get("BitsAllocated"), 0) == 1:  # frames arrive one sample per byte; DICOM packs 8 per byte
        data = pack_bits(np.ascontiguousarray(pixels, dtype=np.uint8), pad=True)
        ds.add(DataElement(0x7FE00010, "OB", data))
        return
    data = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    if pixels.dtype.kind == "f":  # Float (OF) / Double Float (OD) Pixel Data
        double = pixels.dtype.itemsize == 8
        ds.add(DataElement(0x7FE00009 if double else 0x7FE00008, "OD" if double else "OF", data))
        return
    if len(data) % 2:
        data += b"\0"
    bits = pixels.dtype.itemsize * 8
    ds.add(DataElement(0x7FE00010, "OB" if bits == 8 else "OW", data))
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if samples > 1:
        ds.PlanarConfiguration = 0
    photometric = output_photometric(getattr(ds, "PhotometricInterpretation", None), codec, samples)
    if photometric is not None and photometric != ds.get("PhotometricInterpretation"):
        log.debug(
            "%s: Photometric Interpretation %s -> %s",
            ds.SOPInstanceUID,
            ds.PhotometricInterpretation,
            photometric,
        )
        ds.PhotometricInterpretation = photometric


def frames_array(frames: list[np.ndarray], multi_frame: bool) -> np.ndarray:
    if len(frames) == 1 and not multi_frame:
        return frames[0]
    return np.stack(frames)


__all__ = ["make_dataset", "set_pixel_data", "merged_attributes", "output_photometric", "pydicom"]

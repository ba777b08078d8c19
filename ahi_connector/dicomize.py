"""Metadata JSON (+ decoded frames) → pydicom Datasets with native, Explicit VR Little Endian pixel data.

Attributes merge Patient, Study, Series and Instance levels (later levels win). VRs come from the instance's
``DICOMVRs`` (private and ambiguous tags; inside a sequence item also the item's own ``DICOMVRs``), else
pydicom's dictionary; binary VRs are base64; sequences recurse.
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
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian
from pydicom.valuerep import DSfloat

from .decoders.base import Codec
from .errors import DicomizeError
from .metadata import ImageSetMetadata, InstanceInfo, as_int

log = logging.getLogger(__name__)

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_SKIP_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009, 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD})
_YBR = ("YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT")
IMPLEMENTATION_VERSION = "AHI_CONNECTOR_1"


def _tag_of(key: str) -> int | None:
    if _HEX_TAG.match(key):
        return int(key, 16)
    return keyword_dict.get(key)


def _resolve_vr(key: str, tag: int, vrs: Mapping[str, str], context: Mapping[str, Any]) -> str:
    vr = vrs.get(key) or vrs.get(f"{tag:08X}") or vrs.get(f"{tag:08x}")
    if not vr:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    if " or " in vr:
        options = vr.split(" or ")
        if "SS" in options and "US" in options:
            vr = "SS" if as_int(context.get("PixelRepresentation"), 0) == 1 else "US"
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
    try:
        return base64.b64decode(str(value), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise DicomizeError(f"{where}: binary value is not base64 ({exc})") from exc


_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})


def _scalar(vr: str, value: Any) -> Any:
    if vr in _INT_VRS:
        return int(value)
    if vr in _FLOAT_VRS:
        return float(value)
    if vr == "DS" and isinstance(value, str):
        float(value)  # validates; the original string is kept
        return value
    if vr == "IS" and isinstance(value, str):
        float(value)
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


def _value(vr: str, value: Any, vrs: Mapping[str, str], context: Mapping[str, Any], where: str) -> Any:
    if value is None or value == [] or (value == "" and vr not in ("SQ", *BINARY_VRS)):
        return empty_value_for_VR(vr)
    if vr == "SQ":
        items = value if isinstance(value, list) else [value]
        return Sequence([_item(item or {}, vrs, context, where) for item in items])
    if vr in BINARY_VRS:
        return _binary(value, where)
    if isinstance(value, list):
        out = [_scalar(vr, v) for v in value]
        return out[0] if len(out) == 1 else out
    return _scalar(vr, value)


def _item(item: Mapping[str, Any], vrs: Mapping[str, str], context: Mapping[str, Any], where: str) -> Dataset:
    """One sequence item; VRs of its private / ambiguous elements may sit in the item's own ``DICOMVRs``."""
    own = item.get("DICOMVRs")
    attrs = {k: v for k, v in item.items() if k != "DICOMVRs"}
    return build_attributes(attrs, {**vrs, **own} if isinstance(own, Mapping) else vrs, context, where)


def add_attributes(
    ds: Dataset, attrs: Mapping[str, Any], vrs: Mapping[str, str], context: Mapping[str, Any], where: str
) -> None:
    """Add every attribute of one metadata level to ``ds``; unknown keywords are logged and skipped."""
    for key, raw in attrs.items():
        tag = _tag_of(key)
        if tag is None:
            log.warning("%s: %r is neither a DICOM keyword nor an 8-hex tag; attribute skipped", where, key)
            continue
        if tag in _SKIP_TAGS or tag >> 16 == 0x0002:
            continue
        vr = _resolve_vr(key, tag, vrs, context)
        label = f"{where}, ({tag >> 16:04X},{tag & 0xFFFF:04X}) {key}"
        try:
            ds.add(DataElement(tag, vr, _value(vr, raw, vrs, context, label)))
        except DicomizeError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise DicomizeError(f"{label}: value {raw!r} is not valid for VR {vr}: {exc}") from exc


def build_attributes(
    attrs: Mapping[str, Any], vrs: Mapping[str, str], context: Mapping[str, Any], where: str
) -> Dataset:
    ds = Dataset()
    add_attributes(ds, attrs, vrs, context, where)
    return ds


def merged_attributes(meta: ImageSetMetadata, inst: InstanceInfo) -> dict[str, Any]:
    """Patient, Study, Series and Instance level attributes, later levels winning."""
    series = meta.series[inst.series_uid]
    merged: dict[str, Any] = {}
    for level in (meta.patient, meta.study, series.dicom, inst.dicom):
        merged.update(level)
    return merged


def output_photometric(original: str | None, codec: Codec | None, samples: int) -> str | None:
    """Photometric Interpretation of the native pixels we emit: decoders return RGB for colour JPEG / J2K
    (MCT)."""
    if samples != 3 or original is None:
        return original
    if codec is Codec.JPEG and original in _YBR:
        return "RGB"
    if codec in (Codec.J2K, Codec.HTJ2K) and original in ("YBR_ICT", "YBR_RCT"):
        return "RGB"
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
    data = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
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

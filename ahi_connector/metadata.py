"""ImageSet metadata: the gzip JSON of GetImageSetMetadata parsed into typed, read-only views.

Layout (AHI): ``{SchemaVersion, DatastoreID, ImageSetID, Patient:{DICOM}, Study:{DICOM,
Series:{<SeriesUID>:{DICOM, Instances:{<SOPInstanceUID>:{DICOM, DICOMVRs, StoredTransferSyntaxUID,
ImageFrames:[{ID, FrameSizeInBytes, PixelDataChecksumFromBaseToFullResolution:[{Width, Height,
Checksum}]}]}}}}}}``. Keys are DICOM keywords (private tags as 8 hex digits), DS/IS often as strings, binary
as base64.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .decoders.base import FrameSpec
from .errors import FrameRef, MetadataError, SeriesNotFoundError, UnsupportedFrameFormatError

log = logging.getLogger(__name__)


def as_list(value: Any) -> list[Any]:
    """A multi-valued JSON attribute as a list (accepts lists, backslash-separated strings, scalars)."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, str) and "\\" in value:
        return value.split("\\")
    return [value]


def as_floats(value: Any, count: int | None = None) -> tuple[float, ...] | None:
    """Numbers of a DS/FD attribute, or None when absent/empty/not numeric or not ``count`` long."""
    try:
        out = tuple(float(v) for v in as_list(value))
    except (TypeError, ValueError):
        return None
    if not out or (count is not None and len(out) != count):
        return None
    return out


def as_int(value: Any, default: int | None = None) -> int | None:
    items = as_list(value)
    if not items or items[0] in (None, ""):
        return default
    try:
        return int(float(items[0]))
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class FrameInfo:
    """One entry of ImageFrames; ``checksum`` is the CRC32 of the decoded full-resolution frame bytes."""

    id: str
    index: int
    size: int | None
    checksum: int | None
    min_value: Any = None
    max_value: Any = None


def _full_resolution_checksum(entry: Mapping[str, Any]) -> int | None:
    levels = entry.get("PixelDataChecksumFromBaseToFullResolution") or []
    if not levels:
        return None
    best = max(levels, key=lambda lv: int(lv.get("Width", 0)) * int(lv.get("Height", 0)))
    checksum = best.get("Checksum")
    return None if checksum is None else int(checksum) & 0xFFFFFFFF


@dataclass(frozen=True)
class InstanceInfo:
    """One SOP instance: its own DICOM attributes, VR overrides, stored transfer syntax and frames."""

    sop_instance_uid: str
    series_uid: str
    dicom: Mapping[str, Any]
    vrs: Mapping[str, str]
    stored_transfer_syntax: str | None
    frames: tuple[FrameInfo, ...]

    @property
    def instance_number(self) -> int | None:
        return as_int(self.dicom.get("InstanceNumber"))

    def frame_spec(self) -> FrameSpec:
        d = self.dicom
        rows, cols = as_int(d.get("Rows")), as_int(d.get("Columns"))
        if not rows or not cols:
            raise MetadataError(
                f"instance {self.sop_instance_uid} (series {self.series_uid}) lacks (0028,0010) Rows or "
                "(0028,0011) Columns; its frames cannot be laid out"
            )
        bits_allocated = as_int(d.get("BitsAllocated"), 16) or 16
        # The Floating Point Image Pixel module has no Bits Stored / Pixel Representation (PS3.3 C.7.6.24):
        # their absence with 32 or 64 bits allocated means Float / Double Float Pixel Data.
        floating = bits_allocated in (32, 64) and "BitsStored" not in d and "PixelRepresentation" not in d
        if bits_allocated not in (1, 8, 16, 32) and not floating:
            raise UnsupportedFrameFormatError(
                f"instance {self.sop_instance_uid} (series {self.series_uid}) has (0028,0100) Bits Allocated "
                f"{bits_allocated}; the connector exports 1, 8, 16 or 32-bit integer pixels only"
            )
        return FrameSpec(
            rows=rows,
            columns=cols,
            samples_per_pixel=as_int(d.get("SamplesPerPixel"), 1) or 1,
            bits_allocated=bits_allocated,
            bits_stored=as_int(d.get("BitsStored"), bits_allocated) or bits_allocated,
            pixel_representation=as_int(d.get("PixelRepresentation"), 0) or 0,
            photometric=str(d.get("PhotometricInterpretation") or "MONOCHROME2"),
            floating=floating,
        )


@dataclass(frozen=True)
class SeriesInfo:
    series_uid: str
    dicom: Mapping[str, Any]
    instances: tuple[InstanceInfo, ...]

    @property
    def modality(self) -> str | None:
        return self.dicom.get("Modality")

    @property
    def frame_count(self) -> int:
        return sum(len(i.frames) for i in self.instances)


def _sort_key(inst: InstanceInfo) -> tuple[int, int, str]:
    num = inst.instance_number
    return (0 if num is not None else 1, num or 0, inst.sop_instance_uid)


@dataclass(frozen=True)
class ImageSetMetadata:
    """Parsed metadata of one image set version. ``raw`` is the JSON document as returned (treat as
    read-only)."""

    datastore_id: str
    image_set_id: str
    version_id: str | None
    raw: Mapping[str, Any] = field(repr=False)
    patient: Mapping[str, Any] = field(repr=False)
    study: Mapping[str, Any] = field(repr=False)
    series: Mapping[str, SeriesInfo] = field(repr=False)

    @property
    def study_instance_uid(self) -> str | None:
        return self.study.get("StudyInstanceUID")

    def series_uids(self) -> list[str]:
        return list(self.series)

    def get_series(self, series_uid: str | None) -> list[SeriesInfo]:
        """All series (``None``) or the one asked for; SeriesNotFoundError names what exists."""
        if series_uid is None:
            return list(self.series.values())
        if series_uid not in self.series:
            raise SeriesNotFoundError(
                f"series {series_uid} is not in image set {self.image_set_id} (datastore "
                f"{self.datastore_id}); it holds {sorted(self.series)}"
            )
        return [self.series[series_uid]]

    def frame_ref(self, inst: InstanceInfo, frame: FrameInfo) -> FrameRef:
        return FrameRef(
            self.datastore_id,
            self.image_set_id,
            inst.series_uid,
            inst.sop_instance_uid,
            frame.id,
            frame.index,
        )

    def iter_instances(self, series_uid: str | None = None) -> Iterator[InstanceInfo]:
        for series in self.get_series(series_uid):
            yield from series.instances

    @classmethod
    def from_json(
        cls, doc: Mapping[str, Any], datastore_id: str, image_set_id: str, version_id: str | None = None
    ) -> ImageSetMetadata:
        where = f"image set {image_set_id} (datastore {datastore_id})"
        study = doc.get("Study")
        if not isinstance(study, Mapping):
            raise MetadataError(f"metadata of {where} has no 'Study' object; keys: {sorted(doc)}")
        series: dict[str, SeriesInfo] = {}
        for series_uid, sdoc in (study.get("Series") or {}).items():
            instances = []
            for sop_uid, idoc in (sdoc.get("Instances") or {}).items():
                frames = tuple(
                    FrameInfo(
                        id=str(f["ID"]),
                        index=n,
                        size=as_int(f.get("FrameSizeInBytes")),
                        checksum=_full_resolution_checksum(f),
                        min_value=f.get("MinPixelValue"),
                        max_value=f.get("MaxPixelValue"),
                    )
                    for n, f in enumerate(idoc.get("ImageFrames") or [])
                )
                instances.append(
                    InstanceInfo(
                        sop_instance_uid=sop_uid,
                        series_uid=series_uid,
                        dicom=MappingProxyType(idoc.get("DICOM") or {}),
                        vrs=MappingProxyType(idoc.get("DICOMVRs") or {}),
                        stored_transfer_syntax=idoc.get("StoredTransferSyntaxUID"),
                        frames=frames,
                    )
                )
            instances.sort(key=_sort_key)
            series[series_uid] = SeriesInfo(
                series_uid, MappingProxyType(sdoc.get("DICOM") or {}), tuple(instances)
            )
        return cls(
            datastore_id=datastore_id,
            image_set_id=image_set_id,
            version_id=version_id,
            raw=doc,
            patient=MappingProxyType((doc.get("Patient") or {}).get("DICOM") or {}),
            study=MappingProxyType(study.get("DICOM") or {}),
            series=MappingProxyType(series),
        )


def parse_metadata_blob(blob: bytes, datastore_id: str, image_set_id: str) -> dict[str, Any]:
    """gunzip (when gzip) and parse the metadata JSON; MetadataError names the image set on failure."""
    try:
        data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        doc = json.loads(data)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise MetadataError(
            f"metadata of image set {image_set_id} (datastore {datastore_id}) is not valid gzip JSON: {exc}"
        ) from exc
    if not isinstance(doc, dict):
        raise MetadataError(
            f"metadata of image set {image_set_id} is a {type(doc).__name__}, expected an object"
        )
    return doc

"""AHI's DICOMweb in ahi-local: WADO-RS, QIDO-RS and STOW-RS under ``/datastore/{datastoreId}/``.

The same store as the native API: an instance stored with STOW-RS goes through the import job's own code
(:func:`~devstack.ahi_local.importer.prepare_instance` and :func:`~devstack.ahi_local.importer.commit_groups`:
same frame encoding, same primary / non-primary placement) and is visible to GetImageSetMetadata; everything
imported is visible here. Paths, parameters and limits follow the AHI developer guide, "DICOMweb":

* WADO-RS (``GetDICOMSeriesMetadata``, ``GetDICOMInstance``, ``GetDICOMInstanceMetadata``,
  ``GetDICOMInstanceFrames``): primary image sets only unless ``?imageSetId=`` names one; instances and frames
  in their stored transfer syntax (``transfer-syntax=*`` or the stored UID) or uncompressed Explicit VR Little
  Endian (the PS3.18 default); binary attributes over 1 MB are BulkDataURIs (``.../bulkdata/{tag}``).
* QIDO-RS (``SearchDICOMStudies``, ``SearchDICOMSeries``, ``SearchDICOMInstances``): hierarchical only, on the
  attributes the guide lists per level; at most 10,000 records (later ones only through WADO-RS or the native
  API); studies newest update first, series by Series Number, instances by Instance Number.
* STOW-RS (``StoreDICOM``, ``StoreDICOMStudy``): synchronous, at most 1 GB per request, PS3.18 response
  (``00081199`` stored / ``00081198`` failed); each stored instance's RetrieveURL carries its ``imageSetId``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

import numpy as np
import pydicom
from pydicom import datadict
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder, pack_bits
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ahi_connector.decoders import Codec
from ahi_connector.dicomize import add_attributes, output_photometric

from . import metadata
from .dicomweb_media import (
    DICOM,
    DICOM_JSON,
    MULTIPART,
    OCTET,
    DicomWebError,
    MediaType,
    error_response,
    matches,
    multipart_body,
    negotiate_json,
    parse_accept,
    parse_media_type,
    split_multipart,
)
from .errors import ServiceError
from .faults import FaultInjector
from .frames import CONTENT_TYPE_HTJ2K, CONTENT_TYPE_JPEG, CONTENT_TYPE_OCTET, FALLBACK_DECODERS
from .ids import ID_PATTERN
from .importer import FileFailure, PreparedInstance, commit_groups, prepare_instance
from .records import ImageSetRecord
from .store import Store

logger = logging.getLogger(__name__)

QIDO_MAX_RECORDS = 10_000  # "QIDO-RS actions can return a maximum of 10,000 records"
BULK_DATA_THRESHOLD = 1 << 20  # binary attributes over 1 MB are BulkDataURIs
ELE = str(ExplicitVRLittleEndian)
# PS3.18 Table 8.7.3-5: media type of a frame in each compressed transfer syntax.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}
CODECS = {"image/jph": Codec.HTJ2K, "image/jpeg": Codec.JPEG, "image/j2c": Codec.J2K}
# STOW-RS Failure Reason (0008,1197) values (PS3.4 Annex B status codes; Orthanc uses the same).
PROCESSING_FAILURE = 0x0110
CANNOT_UNDERSTAND = 0xC000
SUBSAMPLED_YBR = frozenset({"YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

# Search keys the developer guide lists per level ("Study elements for SearchDICOMStudies", ...).
STUDY_KEYS = (
    "StudyDate StudyTime AccessionNumber ModalitiesInStudy ReferringPhysicianName StudyDescription "
    "PatientName PatientID PatientBirthDate StudyInstanceUID StudyID"
).split()
SERIES_KEYS = ["Modality", "SeriesInstanceUID"]
INSTANCE_KEYS = ["SOPClassUID", "SOPInstanceUID"]
# Attributes returned per level (PS3.18 Table 10.6.3-3, the ones an image set can hold).
STUDY_RETURN = (
    "StudyDate StudyTime AccessionNumber ReferringPhysicianName TimezoneOffsetFromUTC StudyDescription "
    "PatientName PatientID PatientBirthDate PatientSex StudyInstanceUID StudyID"
).split()
# Series and instance results also carry the unique keys of the levels above (as Orthanc and most PACS do).
SERIES_RETURN = (
    "StudyInstanceUID Modality TimezoneOffsetFromUTC SeriesDescription SeriesInstanceUID SeriesNumber "
    "PerformedProcedureStepStartDate PerformedProcedureStepStartTime"
).split()
INSTANCE_RETURN = (
    "StudyInstanceUID SeriesInstanceUID SOPClassUID SOPInstanceUID TimezoneOffsetFromUTC InstanceNumber "
    "Rows Columns BitsAllocated NumberOfFrames"
).split()
QIDO_PARAMS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
_TAG_HEX = re.compile(r"^[0-9A-Fa-f]{8}$")


def keyword_of(attribute: str) -> str:
    """Keyword of a QIDO attribute ID (keyword or 8-hex tag); unknown ones are a 400."""
    if _TAG_HEX.match(attribute):
        tag = int(attribute, 16)
        keyword = datadict.keyword_for_tag(tag)
        return keyword or f"{tag:08X}"
    if datadict.tag_for_keyword(attribute) is None:
        raise DicomWebError(400, f"query attribute {attribute!r} is neither a DICOM keyword nor an 8-hex tag")
    return attribute


# ---- DICOM JSON -----------------------------------------------------------------------------------------
def _dataset(attrs: Mapping[str, Any], vrs: Mapping[str, str], where: str) -> Dataset:
    ds = Dataset()
    try:
        add_attributes(ds, attrs, vrs, attrs, where)
    except Exception as exc:  # a stored value pydicom cannot hold; say which instance
        raise DicomWebError(500, f"{where}: cannot rebuild attributes: {exc}") from exc
    return ds


def dicom_json(ds: Dataset, bulk_base: str | None) -> dict[str, Any]:
    """PS3.18 F.2 DICOM JSON of ``ds``; top-level binary values over 1 MB become ``BulkDataURI``s."""
    out = ds.to_json_dict(bulk_data_threshold=1 << 62)
    if bulk_base is None:
        return out
    for tag, value in out.items():
        inline = value.get("InlineBinary")
        if value.get("vr") in BINARY_VRS and inline and len(inline) * 3 // 4 > BULK_DATA_THRESHOLD:
            out[tag] = {"vr": value["vr"], "BulkDataURI": f"{bulk_base}/bulkdata/{tag}"}
    return out


# ---- the primary-image-set index ------------------------------------------------------------------------
@dataclasses.dataclass
class IndexedInstance:
    record: ImageSetRecord
    flat: metadata.FlatInstance

    @property
    def dicom(self) -> dict[str, Any]:
        return self.flat.dicom

    def first(self, keyword: str) -> Any:
        value = self.flat.dicom.get(keyword)
        return value[0] if isinstance(value, list) and value else value

    def number(self, keyword: str) -> float:
        try:
            return float(self.first(keyword))
        except (TypeError, ValueError):
            return float("inf")


class Index:
    """Flattened instances of image sets, cached per (image set, version)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[tuple[str, str], tuple[int, list[metadata.FlatInstance]]] = {}
        self._lock = threading.Lock()

    def instances(self, record: ImageSetRecord) -> list[IndexedInstance]:
        key = (record.datastore_id, record.image_set_id)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None or cached[0] != record.latest_version:
            flat = metadata.flatten_document(self.store.document(record))
            cached = (record.latest_version, flat)
            with self._lock:
                self._cache[key] = cached
        return [IndexedInstance(record, f) for f in cached[1]]

    def primary(self, datastore_id: str) -> list[IndexedInstance]:
        self.store.datastore(datastore_id)
        out: list[IndexedInstance] = []
        for record in self.store.live_image_sets(datastore_id):
            if record.is_primary:
                out.extend(self.instances(record))
        return out

    def scope(self, datastore_id: str, image_set_id: str | None) -> list[IndexedInstance]:
        """Instances WADO-RS may reach: the named image set (primary or not), else every primary one."""
        if image_set_id is None:
            return self.primary(datastore_id)
        if not ID_PATTERN.fullmatch(image_set_id):
            raise DicomWebError(
                400, f"imageSetId {image_set_id!r} is malformed: expected 32 characters [0-9a-z]"
            )
        return self.instances(self.store.image_set(datastore_id, image_set_id))


# ---- QIDO matching (PS3.4 C.2.2.2) ----------------------------------------------------------------------
def _wildcard(pattern: str, case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{body}$", 0 if case else re.IGNORECASE)


def _range(value: str, query: str) -> bool:
    lo, _, hi = query.partition("-")
    value = value.strip()
    return (
        bool(value) and (not lo or value >= lo.strip()) and (not hi or value[: len(hi.strip())] <= hi.strip())
    )


def value_matches(keyword: str, stored: Any, query: str) -> bool:
    """Single value, list of UIDs, wildcard, range (DA/TM/DT) and universal matching."""
    if query == "":
        return True
    vr = datadict.dictionary_VR(keyword) if datadict.tag_for_keyword(keyword) else "LO"
    values = stored if isinstance(stored, list) else [stored]
    texts = []
    for v in values:
        if isinstance(v, dict):  # PN as stored by some writers
            v = v.get("Alphabetic", "")
        texts.append("" if v is None else str(v).strip())
    if vr == "UI":
        wanted = {u.strip() for u in re.split(r"[\\,]", query) if u.strip()}
        return any(t in wanted for t in texts)
    if vr in ("DA", "TM", "DT") and "-" in query:
        return any(_range(t, query) for t in texts)
    if "*" in query or "?" in query:
        rx = _wildcard(query, case=vr != "PN")
        return any(rx.match(t) for t in texts)
    if vr == "PN":
        return any(t.lower() == query.lower() for t in texts)
    return any(t == query for t in texts)


@dataclasses.dataclass(frozen=True)
class Query:
    filters: dict[str, str]
    includes: frozenset[str] | None  # None: includefield=all
    limit: int | None
    offset: int


def parse_query(request: Request, allowed: list[str], level: str) -> Query:
    filters: dict[str, str] = {}
    includes: set[str] | None = set()
    limit: int | None = None
    offset = 0
    for key, value in request.query_params.multi_items():
        if key in ("limit", "offset"):
            try:
                number = int(value)
            except ValueError as exc:
                raise DicomWebError(400, f"{key}={value!r} is not an integer") from exc
            if number < (1 if key == "limit" else 0):
                raise DicomWebError(
                    400, f"{key}={value} is out of range ({'>= 1' if key == 'limit' else '>= 0'})"
                )
            limit, offset = (number, offset) if key == "limit" else (limit, number)
        elif key == "includefield":
            for item in (v.strip() for v in value.split(",") if v.strip()):
                if item == "all":
                    includes = None
                elif includes is not None:
                    includes.add(keyword_of(item))
        elif key == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise DicomWebError(400, f"fuzzymatching={value!r} must be true or false")
        else:
            keyword = keyword_of(key)
            if keyword not in allowed:
                raise DicomWebError(
                    400,
                    f"{level} search does not support attribute {key!r}; supported: {', '.join(allowed)} "
                    f"and {', '.join(sorted(QIDO_PARAMS))}",
                )
            filters[keyword] = value
    return Query(filters, None if includes is None else frozenset(includes), limit, offset)


def page(items: list[Any], query: Query) -> list[Any]:
    items = items[:QIDO_MAX_RECORDS]
    end = None if query.limit is None else query.offset + query.limit
    return items[query.offset : end]


# ---- the service ----------------------------------------------------------------------------------------
class DicomWeb:
    """Route handlers of the DICOMweb service over one :class:`Store`."""

    def __init__(self, store: Store, faults: FaultInjector | None = None) -> None:
        self.store = store
        self.index = Index(store)
        self.faults = faults

    def routes(self) -> list[Route]:
        base = "/datastore/{datastoreId}/studies"
        series = base + "/{study}/series/{series}"
        instance = series + "/instances/{sop}"
        # (path, handler, method, AHI operation name: fault injection and logs use it)
        table: list[tuple[str, Callable[..., Any], str, str]] = [
            (base, self.search_studies, "GET", "SearchDICOMStudies"),
            (base, self.store_instances, "POST", "StoreDICOM"),
            (base + "/{study}", self.store_instances, "POST", "StoreDICOMStudy"),
            (base + "/{study}/series", self.search_series, "GET", "SearchDICOMSeries"),
            (series + "/instances", self.search_instances, "GET", "SearchDICOMInstances"),
            (series + "/metadata", self.series_metadata, "GET", "GetDICOMSeriesMetadata"),
            (instance, self.instance, "GET", "GetDICOMInstance"),
            (instance + "/metadata", self.instance_metadata, "GET", "GetDICOMInstanceMetadata"),
            (instance + "/frames/{frames}", self.frames, "GET", "GetDICOMInstanceFrames"),
            (instance + "/bulkdata/{tag}", self.bulkdata, "GET", "GetDICOMBulkdata"),
        ]
        return [
            Route(path, self._wrap(handler, operation), methods=[method], name=operation)
            for path, handler, method, operation in table
        ]

    def _wrap(self, handler: Callable[[Request], Any], operation: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                if self.faults is not None:
                    if self.faults.latency_s():
                        await asyncio.sleep(self.faults.latency_s())
                    self.faults.check_request(operation)
                return await handler(request)
            except DicomWebError as exc:
                return error_response(exc)
            except ServiceError as exc:
                return error_response(DicomWebError(exc.status, exc.message))
            except Exception as exc:
                logger.exception("DICOMweb %s %s failed", request.method, request.url.path)
                return error_response(DicomWebError(500, f"{type(exc).__name__}: {exc} (see server log)"))

        endpoint.__name__ = operation
        return endpoint

    # ---- URLs ----------------------------------------------------------------------------------------
    @staticmethod
    def _base(request: Request) -> str:
        """``{scheme}://{host}/datastore/{datastoreId}``; a Host header without a port (dicomweb-client sends
        one) gets the port this server listens on."""
        host = request.headers.get("host", "")
        server = request.scope.get("server")
        if server and (not host or ":" not in host.rsplit("]", 1)[-1]):
            host = f"{host or server[0]}:{server[1]}"
        return f"{request.url.scheme}://{host}/datastore/{request.path_params['datastoreId']}"

    def _instance_url(self, request: Request, inst: IndexedInstance, with_set: bool = False) -> str:
        d = inst.dicom
        url = (
            f"{self._base(request)}/studies/{quote(str(d.get('StudyInstanceUID', '')))}/series/"
            f"{quote(inst.flat.series_uid)}/instances/{quote(inst.flat.sop_uid)}"
        )
        return url + (f"?imageSetId={inst.record.image_set_id}" if with_set else "")

    # ---- QIDO-RS -------------------------------------------------------------------------------------
    @staticmethod
    def _filtered(items: list[IndexedInstance], filters: Mapping[str, str]) -> list[IndexedInstance]:
        return [i for i in items if all(value_matches(k, i.dicom.get(k), v) for k, v in filters.items())]

    @staticmethod
    def _attributes(inst: IndexedInstance, keywords: Iterable[str], query: Query) -> dict[str, Any]:
        wanted = list(keywords)
        if query.includes is None:
            wanted += [k for k in inst.dicom if k not in wanted]
        else:
            wanted += [k for k in query.includes if k not in wanted]
        return {k: inst.dicom[k] for k in wanted if k in inst.dicom}

    def _json(self, inst: IndexedInstance, keywords: Iterable[str], query: Query, extra: Dataset) -> dict:
        attrs = self._attributes(inst, keywords, query)
        ds = _dataset(attrs, inst.flat.vrs, f"instance {inst.flat.sop_uid}")
        for elem in extra:
            ds.add(elem)
        out = ds.to_json_dict(bulk_data_threshold=1 << 62)
        return dict(sorted(out.items()))

    @staticmethod
    def _respond_json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status_code=status, media_type=DICOM_JSON)

    async def search_studies(self, request: Request) -> Response:
        negotiate_json(request.headers.get("accept"), "SearchDICOMStudies")
        query = parse_query(request, STUDY_KEYS, "study")
        items = self.index.primary(request.path_params["datastoreId"])
        studies: dict[str, list[IndexedInstance]] = {}
        for inst in items:
            studies.setdefault(str(inst.dicom.get("StudyInstanceUID", "")), []).append(inst)
        rows = []
        for study_uid, members in studies.items():
            modalities = sorted({str(m.first("Modality")) for m in members if m.first("Modality")})
            filters = dict(query.filters)
            wanted_modality = filters.pop("ModalitiesInStudy", None)
            if wanted_modality is not None and not any(
                value_matches("Modality", m, wanted_modality) for m in modalities
            ):
                continue
            if not self._filtered(members[:1], filters):
                continue
            first = members[0]
            extra = Dataset()
            extra.ModalitiesInStudy = modalities
            extra.NumberOfStudyRelatedSeries = len({m.flat.series_uid for m in members})
            extra.NumberOfStudyRelatedInstances = len(members)
            extra.RetrieveURL = f"{self._base(request)}/studies/{study_uid}"
            updated = max(m.record.updated_at for m in members)
            rows.append((updated, self._json(first, STUDY_RETURN, query, extra)))
        rows.sort(key=lambda r: -r[0])
        return self._respond_json(page([r[1] for r in rows], query))

    async def search_series(self, request: Request) -> Response:
        negotiate_json(request.headers.get("accept"), "SearchDICOMSeries")
        query = parse_query(request, SERIES_KEYS, "series")
        study = request.path_params["study"]
        items = [
            i
            for i in self.index.primary(request.path_params["datastoreId"])
            if i.dicom.get("StudyInstanceUID") == study
        ]
        series: dict[str, list[IndexedInstance]] = {}
        for inst in items:
            series.setdefault(inst.flat.series_uid, []).append(inst)
        rows = []
        for series_uid, members in series.items():
            if not self._filtered(members[:1], query.filters):
                continue
            extra = Dataset()
            extra.NumberOfSeriesRelatedInstances = len(members)
            extra.RetrieveURL = f"{self._base(request)}/studies/{study}/series/{series_uid}"
            rows.append(
                (
                    members[0].number("SeriesNumber"),
                    series_uid,
                    self._json(members[0], SERIES_RETURN, query, extra),
                )
            )
        rows.sort(key=lambda r: (r[0], r[1]))
        return self._respond_json(page([r[2] for r in rows], query))

    async def search_instances(self, request: Request) -> Response:
        negotiate_json(request.headers.get("accept"), "SearchDICOMInstances")
        query = parse_query(request, INSTANCE_KEYS, "instance")
        study, series = request.path_params["study"], request.path_params["series"]
        items = [
            i
            for i in self.index.primary(request.path_params["datastoreId"])
            if i.dicom.get("StudyInstanceUID") == study and i.flat.series_uid == series
        ]
        rows = []
        for inst in self._filtered(items, query.filters):
            extra = Dataset()
            extra.RetrieveURL = self._instance_url(request, inst)
            rows.append(
                (
                    inst.number("InstanceNumber"),
                    inst.flat.sop_uid,
                    self._json(inst, INSTANCE_RETURN, query, extra),
                )
            )
        rows.sort(key=lambda r: (r[0], r[1]))
        return self._respond_json(page([r[2] for r in rows], query))

    # ---- WADO-RS -------------------------------------------------------------------------------------
    def _series_members(self, request: Request) -> list[IndexedInstance]:
        p = request.path_params
        image_set_id = request.query_params.get("imageSetId")
        members = [
            i
            for i in self.index.scope(p["datastoreId"], image_set_id)
            if i.flat.series_uid == p["series"] and i.dicom.get("StudyInstanceUID") == p["study"]
        ]
        if not members:
            where = f"image set {image_set_id}" if image_set_id else "any primary image set"
            raise DicomWebError(
                404,
                f"series {p['series']} of study {p['study']} not found in {where} of datastore "
                f"{p['datastoreId']}",
            )
        return members

    def _instance(self, request: Request) -> IndexedInstance:
        sop = request.path_params["sop"]
        for inst in self._series_members(request):
            if inst.flat.sop_uid == sop:
                return inst
        raise DicomWebError(404, f"instance {sop} not found in series {request.path_params['series']}")

    def _metadata_json(self, request: Request, inst: IndexedInstance) -> dict[str, Any]:
        where = f"instance {inst.flat.sop_uid} (image set {inst.record.image_set_id})"
        ds = _dataset(inst.dicom, inst.flat.vrs, where)
        url = self._instance_url(request, inst)
        out = dicom_json(ds, url)
        if inst.flat.frames:
            bits = int(inst.first("BitsAllocated") or 16)
            out["7FE00010"] = {"vr": "OW" if bits > 8 else "OB", "BulkDataURI": f"{url}/bulkdata/7FE00010"}
        if inst.flat.stored_transfer_syntax:
            out["00083002"] = {"vr": "UI", "Value": [inst.flat.stored_transfer_syntax]}
        return dict(sorted(out.items()))

    async def series_metadata(self, request: Request) -> Response:
        negotiate_json(request.headers.get("accept"), "GetDICOMSeriesMetadata")
        members = sorted(
            self._series_members(request), key=lambda i: (i.number("InstanceNumber"), i.flat.sop_uid)
        )
        return self._respond_json([self._metadata_json(request, i) for i in members])

    async def instance_metadata(self, request: Request) -> Response:
        negotiate_json(request.headers.get("accept"), "GetDICOMInstanceMetadata")
        return self._respond_json([self._metadata_json(request, self._instance(request))])

    # ---- pixel data ----------------------------------------------------------------------------------
    def _stored_frames(self, inst: IndexedInstance) -> list[tuple[bytes, str]]:
        out = []
        for frame in inst.flat.frames:
            location = self.store.frame(inst.record.datastore_id, inst.record.image_set_id, frame["ID"])
            out.append((location.path.read_bytes(), location.content_type))
        return out

    @staticmethod
    def _native(inst: IndexedInstance, data: bytes, content_type: str) -> tuple[bytes, str | None]:
        """Little-endian native sample bytes of one stored frame (1-bit frames stay one byte per pixel) and,
        for kept lossy frames, the Photometric Interpretation of those bytes.

        Our own lossless HTJ2K decodes with imagecodecs (it wrote it). Kept JPEG / JPEG 2000 frames decode
        with pydicom as a DICOM reader would (colour-converted to RGB, as DCMTK and Orthanc do), falling back
        to imagecodecs where pydicom's plugins reject the stream (e.g. 12-bit JPEG Extended)."""
        if content_type == CONTENT_TYPE_OCTET:
            return data, None
        syntax = str(inst.flat.stored_transfer_syntax)
        if content_type != CONTENT_TYPE_HTJ2K:
            try:
                options: dict[str, Any] = {
                    "rows": int(inst.first("Rows")),
                    "columns": int(inst.first("Columns")),
                    "samples_per_pixel": int(inst.first("SamplesPerPixel") or 1),
                    "bits_allocated": int(inst.first("BitsAllocated") or 8),
                    "bits_stored": int(inst.first("BitsStored") or inst.first("BitsAllocated") or 8),
                    "pixel_representation": int(inst.first("PixelRepresentation") or 0),
                    "photometric_interpretation": str(
                        inst.first("PhotometricInterpretation") or "MONOCHROME2"
                    ),
                    "planar_configuration": int(inst.first("PlanarConfiguration") or 0),
                    "number_of_frames": 1,
                    "as_rgb": True,
                }
                arr, meta = get_decoder(syntax).as_array(encapsulate([data]), **options)
                arr = np.ascontiguousarray(arr)
                photometric = str(meta.get("photometric_interpretation") or "") or None
                return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes(), photometric
            except Exception as exc:  # decoder plugins raise many types
                logger.info(
                    "pydicom cannot decode a frame of %s (%s); using imagecodecs", inst.flat.sop_uid, exc
                )
        decode: Any = FALLBACK_DECODERS.get(syntax)
        if decode is None:
            raise DicomWebError(500, f"instance {inst.flat.sop_uid}: no decoder for stored {syntax}")
        arr = np.ascontiguousarray(decode(data))
        photometric = "RGB" if arr.ndim == 3 and content_type == CONTENT_TYPE_JPEG else None
        return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes(), photometric

    @staticmethod
    def _choose_syntax(inst: IndexedInstance, media: MediaType) -> str | None:
        """Transfer syntax to answer for one acceptable media range, or None if it cannot be served."""
        stored = inst.flat.stored_transfer_syntax or ELE
        wanted = media.param("transfer-syntax")
        if wanted is None:
            return ELE
        if wanted == "*" or wanted == stored:
            return stored
        if wanted == ELE:
            return ELE
        return None

    def _pixel_element(self, inst: IndexedInstance, ds: Dataset, syntax: str) -> None:
        frames = self._stored_frames(inst)
        if not frames:
            return
        bits = int(inst.first("BitsAllocated") or 16)
        if syntax != ELE:
            ds.add(DataElement(0x7FE00010, "OB", encapsulate([data for data, _ in frames])))
            return
        decoded = [self._native(inst, data, ctype) for data, ctype in frames]
        native = [d for d, _ in decoded]
        if bits == 1:
            data = pack_bits(np.frombuffer(b"".join(native), np.uint8), pad=False)
            tag, vr = 0x7FE00010, "OB"
        elif frames[0][1] == CONTENT_TYPE_OCTET and bits in (32, 64):
            data, tag, vr = (
                b"".join(native),
                (0x7FE00008 if bits == 32 else 0x7FE00009),
                ("OF" if bits == 32 else "OD"),
            )
        else:
            data, tag, vr = b"".join(native), 0x7FE00010, "OW" if bits > 8 else "OB"
        if len(data) % 2:
            data += b"\0"
        ds.add(DataElement(tag, vr, data))
        samples = int(inst.first("SamplesPerPixel") or 1)
        if samples > 1:
            ds.PlanarConfiguration = 0
            codec = CODECS.get(frames[0][1])
            photometric = decoded[0][1] or output_photometric(
                ds.get("PhotometricInterpretation"), codec, samples
            )
            # Frames are stored decoded to full resolution: subsampled YBR is full YBR once uncompressed.
            if photometric in SUBSAMPLED_YBR:
                photometric = "YBR_FULL"
            if photometric:
                ds.PhotometricInterpretation = photometric

    def _part10(self, inst: IndexedInstance, syntax: str) -> bytes:
        where = f"instance {inst.flat.sop_uid} (image set {inst.record.image_set_id})"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(str(inst.dicom.get("SOPClassUID") or "1.2.840.10008.5.1.4.1.1.7"))
        meta.MediaStorageSOPInstanceUID = UID(inst.flat.sop_uid)
        meta.TransferSyntaxUID = UID(syntax)
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
        try:
            add_attributes(ds, inst.dicom, inst.flat.vrs, inst.dicom, where)
        except Exception as exc:
            raise DicomWebError(500, f"{where}: cannot rebuild attributes: {exc}") from exc
        self._pixel_element(inst, ds, syntax)
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()

    async def instance(self, request: Request) -> Response:
        inst = self._instance(request)
        accept = request.headers.get("accept")
        for media in parse_accept(accept):
            multipart = media.name == MULTIPART
            if multipart and media.param("type", DICOM) not in (DICOM, "*/*"):
                continue
            if not multipart and not matches(media.name, DICOM):
                continue
            syntax = self._choose_syntax(inst, media)
            if syntax is None:
                continue
            data = await run_in_threadpool(self._part10, inst, syntax)
            ctype = f"{DICOM}; transfer-syntax={syntax}"
            if not multipart:
                return Response(data, media_type=ctype)
            body, boundary = multipart_body([(ctype, data, {})])
            return Response(
                body, headers={"Content-Type": f'{MULTIPART}; type="{DICOM}"; boundary={boundary}'}
            )
        stored = inst.flat.stored_transfer_syntax or ELE
        raise DicomWebError(
            406,
            f"GetDICOMInstance: Accept {accept!r} offers no representation of instance {inst.flat.sop_uid}; "
            f'available: {DICOM} (or {MULTIPART}; type="{DICOM}") with transfer-syntax {stored} (stored), '
            f"{ELE} or *",
        )

    def _frame_numbers(self, request: Request, inst: IndexedInstance) -> list[int]:
        text = request.path_params["frames"]
        try:
            numbers = [int(n) for n in text.split(",")]
        except ValueError as exc:
            raise DicomWebError(
                400, f"frame list {text!r} must be comma-separated frame numbers (1-based)"
            ) from exc
        if len(set(numbers)) != len(numbers):
            raise DicomWebError(400, f"frame list {text!r} repeats a frame number")
        count = len(inst.flat.frames)
        for n in numbers:
            if not 1 <= n <= count:
                raise DicomWebError(
                    404, f"instance {inst.flat.sop_uid} has frames 1..{count}; there is no frame {n}"
                )
        return numbers

    async def frames(self, request: Request) -> Response:
        inst = self._instance(request)
        numbers = self._frame_numbers(request, inst)
        accept = request.headers.get("accept")
        stored = inst.flat.stored_transfer_syntax or ELE
        stored_type = FRAME_MEDIA_TYPES.get(stored, OCTET)
        for media in parse_accept(accept):
            if media.name == MULTIPART:
                part_type = media.param("type", OCTET)
            elif media.name == "*/*":
                part_type = OCTET
            else:
                continue
            if part_type in (OCTET, "*/*") and media.param("transfer-syntax") in (None, ELE):
                syntax = ELE
            elif part_type in (stored_type, "*/*") and media.param("transfer-syntax") in (None, "*", stored):
                syntax = stored
            elif part_type == OCTET and media.param("transfer-syntax") == "*":
                syntax = stored
            else:
                continue
            frames = self._stored_frames(inst)
            bits = int(inst.first("BitsAllocated") or 16)
            parts = []
            for n in numbers:
                data, ctype = frames[n - 1]
                if syntax == ELE:
                    data = self._native(inst, data, ctype)[0]
                    if bits == 1:
                        data = pack_bits(np.frombuffer(data, np.uint8), pad=False)
                    part_ctype = f"{OCTET}; transfer-syntax={ELE}"
                else:
                    part_ctype = f"{FRAME_MEDIA_TYPES.get(syntax, OCTET)}; transfer-syntax={syntax}"
                parts.append(
                    (
                        part_ctype,
                        data,
                        {"Content-Location": f"{self._instance_url(request, inst)}/frames/{n}"},
                    )
                )
            body, boundary = multipart_body(parts)
            top = part_ctype.split(";")[0]
            return Response(body, headers={"Content-Type": f'{MULTIPART}; type="{top}"; boundary={boundary}'})
        raise DicomWebError(
            406,
            f"GetDICOMInstanceFrames: Accept {accept!r} offers no representation of the frames of instance "
            f'{inst.flat.sop_uid}; available: {MULTIPART}; type="{OCTET}" (transfer-syntax {ELE}) or '
            f'type="{stored_type}" (transfer-syntax {stored}, stored)',
        )

    async def bulkdata(self, request: Request) -> Response:
        inst = self._instance(request)
        tag = request.path_params["tag"].upper()
        if not _TAG_HEX.match(tag):
            raise DicomWebError(400, f"bulk data tag {tag!r} must be 8 hex digits")
        data = await run_in_threadpool(self._part10, inst, ELE)
        ds = pydicom.dcmread(io.BytesIO(data))
        number = int(tag, 16)
        if number == 0x7FE00010:
            number = next((t for t in (0x7FE00010, 0x7FE00008, 0x7FE00009) if t in ds), number)
        if number not in ds or ds[number].VR not in BINARY_VRS:
            raise DicomWebError(404, f"instance {inst.flat.sop_uid} has no binary attribute {tag}")
        body, boundary = multipart_body([(OCTET, bytes(ds[number].value), {})])
        return Response(body, headers={"Content-Type": f'{MULTIPART}; type="{OCTET}"; boundary={boundary}'})

    # ---- STOW-RS -------------------------------------------------------------------------------------
    async def store_instances(self, request: Request) -> Response:
        datastore_id = request.path_params["datastoreId"]
        study = request.path_params.get("study")
        self.store.datastore(datastore_id)
        negotiate_json(request.headers.get("accept"), "StoreDICOM")
        raw_type = request.headers.get("content-type", "")
        try:
            ctype = parse_media_type(raw_type)
        except ValueError as exc:
            raise DicomWebError(
                415, f'Content-Type {raw_type!r} is not a media type; send {MULTIPART}; type="{DICOM}"'
            ) from exc
        if ctype.name == MULTIPART:
            if ctype.param("type", DICOM) != DICOM:
                raise DicomWebError(
                    415,
                    f"multipart/related type {ctype.param('type')!r} is not supported; StoreDICOM takes "
                    "DICOM Part 10 "
                    f'instances (type="{DICOM}"), not metadata + bulk data',
                )
            if not ctype.param("boundary"):
                raise DicomWebError(
                    400, "malformed multipart body: the Content-Type has no boundary parameter"
                )
        elif ctype.name != DICOM:
            raise DicomWebError(
                415,
                f'Content-Type {ctype.name!r} is not accepted; send {MULTIPART}; type="{DICOM}" or {DICOM}',
            )
        # The request guard has already refused bodies over 1 GB (guard.MAX_STOW_BODY_BYTES) with a 413.
        body = await request.body()
        if ctype.name == DICOM:
            bodies = [body]
        else:
            parts = split_multipart(body, str(ctype.param("boundary")))
            for number, part in enumerate(parts, 1):
                part_type = part.content_type
                if part_type and parse_media_type(part_type).name != DICOM:
                    raise DicomWebError(
                        415, f"part {number} has Content-Type {part_type!r}; every part must be {DICOM}"
                    )
            bodies = [p.body for p in parts]
        if not any(bodies):
            raise DicomWebError(400, "the request holds no DICOM instance")
        result, messages = await run_in_threadpool(self._store, request, datastore_id, study, bodies)
        status = 200 if "00081198" not in result else (202 if "00081199" in result else 409)
        response = self._respond_json(result, status)
        for message in messages[:20]:
            text = message.replace('"', "'").encode("ascii", "replace").decode()[:500]
            response.headers.append("Warning", f'299 ahi-local "{text}"')
        return response

    def _store(
        self, request: Request, datastore_id: str, study: str | None, bodies: list[bytes]
    ) -> tuple[dict[str, Any], list[str]]:
        failed: list[tuple[str, str, int, str]] = []
        prepared: list[PreparedInstance] = []
        for number, body in enumerate(bodies, 1):
            label = f"part {number}"
            try:
                head = pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True)
                uids = (str(head.get("SOPClassUID", "")), str(head.get("SOPInstanceUID", "")))
                body_study = str(head.get("StudyInstanceUID", ""))
            except Exception as exc:
                failed.append(("", "", CANNOT_UNDERSTAND, f"{label}: not a DICOM Part 10 instance: {exc}"))
                continue
            if study is not None and body_study != study:
                failed.append(
                    (
                        *uids,
                        PROCESSING_FAILURE,
                        f"{label}: Study Instance UID {body_study} does not match {study} in the URL",
                    )
                )
                continue
            outcome = prepare_instance(self.store, datastore_id, label, body)
            if isinstance(outcome, FileFailure):
                reason = (
                    CANNOT_UNDERSTAND if outcome.exception_type == "InvalidDICOMFile" else PROCESSING_FAILURE
                )
                failed.append((*uids, reason, f"{label}: {outcome.exception_type}: {outcome.message}"))
            else:
                prepared.append(outcome)
        success, _sets = commit_groups(self.store, datastore_id, prepared) if prepared else ([], {})
        by_label = {line["inputFile"]: line["importResponse"] for line in success}
        out = Dataset()
        base = self._base(request)
        if study is not None:
            out.RetrieveURL = f"{base}/studies/{study}"
        referenced = []
        for item in prepared:
            response = by_label[item.input_file]
            record = self.store.image_set(datastore_id, response["imageSetId"])
            inst = IndexedInstance(record, item.flat)
            ref = Dataset()
            ref.ReferencedSOPClassUID = str(item.flat.dicom.get("SOPClassUID", ""))
            ref.ReferencedSOPInstanceUID = item.flat.sop_uid
            ref.RetrieveURL = self._instance_url(request, inst, with_set=True)
            referenced.append(ref)
            logger.info(
                "STOW-RS stored %s into image set %s (primary=%s)",
                item.flat.sop_uid,
                record.image_set_id,
                record.is_primary,
            )
        failures = []
        for sop_class, sop_uid, reason, message in failed:
            failure = Dataset()
            failure.ReferencedSOPClassUID = sop_class
            failure.ReferencedSOPInstanceUID = sop_uid
            failure.FailureReason = reason
            failures.append(failure)
            logger.warning("STOW-RS rejected %s: %s", sop_uid or "an instance", message)
        if referenced:
            out.ReferencedSOPSequence = referenced
        if failures:
            out.FailedSOPSequence = failures
        return out.to_json_dict(), [m[3] for m in failed]

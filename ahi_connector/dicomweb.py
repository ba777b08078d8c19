"""A small client for AHI's DICOMweb interface (STOW-RS, QIDO-RS, WADO-RS), SigV4-signed like the native API.

Credentials come from the boto3 chain (or an explicit ``boto3.Session``); requests are signed with botocore's
``SigV4Auth`` for service ``medical-imaging``. The endpoint is ``endpoint_url``, else
``AHI_DICOMWEB_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL_MEDICAL_IMAGING`` / ``AWS_ENDPOINT_URL`` (a local
ahi-local serves both interfaces on one port), else ``https://dicom-medical-imaging.<region>.amazonaws.com``.

Throttling (429) and 5xx answers are retried with exponential backoff; other errors raise
:class:`~ahi_connector.errors.AHIRequestError` with the status and the service's reason. Reading frames stays
on the native API by default (GetImageFrame's quota is 20x DICOMweb's retrieve quota); :class:`DicomWebSource`
lets :class:`~ahi_connector.exporter.ImageSetExporter` read a series through WADO-RS instead, for roles that
only grant DICOMweb.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlparse

import boto3
import botocore.exceptions as bce
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from pydicom import datadict

from .client import configured_endpoint
from .errors import AHIConfigError, AHICredentialsError, AHIRequestError
from .multipart import MultipartError, multipart_body, parse_media_type, split_multipart

log = logging.getLogger(__name__)

SERVICE = "medical-imaging"
ENV_DICOMWEB_ENDPOINT = "AHI_DICOMWEB_ENDPOINT_URL"
ELE = "1.2.840.10008.1.2.1"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
PIXEL_TAGS = frozenset({"7FE00010", "7FE00008", "7FE00009"})


def dicomweb_endpoint(endpoint_url: str | None, region: str) -> str:
    """The DICOMweb base URL (see the module docstring for the order)."""
    url = (
        endpoint_url
        or os.environ.get(ENV_DICOMWEB_ENDPOINT)
        or configured_endpoint(SERVICE)
        or f"https://dicom-medical-imaging.{region}.amazonaws.com"
    )
    return url.rstrip("/")


@dataclasses.dataclass(frozen=True)
class StoredInstance:
    sop_class_uid: str
    sop_instance_uid: str
    retrieve_url: str | None

    @property
    def image_set_id(self) -> str | None:
        """The image set the instance went into, when the RetrieveURL names it (``?imageSetId=``)."""
        if not self.retrieve_url:
            return None
        values = parse_qs(urlparse(self.retrieve_url).query).get("imageSetId")
        return values[0] if values else None


@dataclasses.dataclass(frozen=True)
class StowResult:
    """A STOW-RS response: HTTP status, stored (00081199) and failed (00081198) instances, warnings."""

    status: int
    stored: tuple[StoredInstance, ...]
    failed: tuple[tuple[str, str, int | None], ...]
    warnings: tuple[str, ...]

    @property
    def image_set_ids(self) -> list[str]:
        return list(dict.fromkeys(i.image_set_id for i in self.stored if i.image_set_id))


def _first(entry: Mapping[str, Any] | None, default: Any = None) -> Any:
    values = (entry or {}).get("Value") or []
    return values[0] if values else default


class DicomWebClient:
    """SigV4-signed DICOMweb calls against one AHI endpoint; thread-safe (one urllib3 pool)."""

    def __init__(
        self,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        session: boto3.session.Session | None = None,
        *,
        max_attempts: int = 4,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        max_pool_connections: int = 16,
    ) -> None:
        if max_attempts < 1:
            raise AHIConfigError(f"max_attempts must be >= 1, got {max_attempts}")
        self.session = session or boto3.session.Session()
        self.region = (
            region_name or self.session.region_name or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        self.endpoint = dicomweb_endpoint(endpoint_url, self.region)
        self.max_attempts = max_attempts
        self._http = urllib3.PoolManager(
            maxsize=max_pool_connections,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        )
        log.debug("DICOMweb client: endpoint=%s region=%s", self.endpoint, self.region)

    # -- transport -------------------------------------------------------------------------------------------
    def _signed_headers(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> dict[str, str]:
        credentials = self.session.get_credentials()
        if credentials is None:
            raise AHICredentialsError(
                "no AWS credentials found for DICOMweb; configure the default chain (env, profile, role)"
            )
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        SigV4Auth(credentials.get_frozen_credentials(), SERVICE, self.region).add_auth(request)
        return dict(request.headers.items())

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        what: str,
    ) -> urllib3.BaseHTTPResponse:
        """One signed call, retried on 429/5xx and connection errors; errors name ``what`` and the reason."""
        url = self.endpoint + path + (f"?{urlencode(query, safe='*,')}" if query else "")
        last: str = ""
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(min(2.0, 0.1 * 2**attempt) * (0.5 + random.random() / 2))
            signed = self._signed_headers(method, url, body, headers or {})
            try:
                resp = self._http.request(
                    method, url, body=body or None, headers=signed, preload_content=True
                )
            except urllib3.exceptions.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                log.debug("%s: attempt %d: %s", what, attempt + 1, last)
                continue
            if resp.status < 400 or self._is_stow_answer(method, resp):
                return resp
            reason = self._reason(resp)
            if resp.status in RETRYABLE_STATUS:
                last = f"HTTP {resp.status}: {reason}"
                log.debug("%s: attempt %d: %s", what, attempt + 1, last)
                continue
            if resp.status == 403:
                raise AHICredentialsError(f"{what}: access denied (HTTP 403): {reason}")
            raise AHIRequestError(
                f"{what}: HTTP {resp.status}: {reason}",
                http_status=resp.status if resp.status in (400, 404, 406, 409, 413, 415) else 502,
            )
        raise AHIRequestError(f"{what}: failed after {self.max_attempts} attempts ({last})", http_status=502)

    @staticmethod
    def _is_stow_answer(method: str, resp: urllib3.BaseHTTPResponse) -> bool:
        """A STOW-RS 409 with a DICOM JSON body is an answer (no instance stored), not a transport error."""
        return (
            method == "POST"
            and resp.status == 409
            and "dicom+json" in (resp.headers.get("Content-Type") or "")
        )

    @staticmethod
    def _reason(resp: urllib3.BaseHTTPResponse) -> str:
        try:
            message = json.loads(resp.data).get("message")
        except (ValueError, AttributeError):
            message = None
        warning = resp.headers.get("Warning")
        return str(message or warning or resp.data[:300].decode(errors="replace") or resp.reason)

    @staticmethod
    def _path(datastore_id: str, *uids: str) -> str:
        parts = [f"/datastore/{quote(datastore_id)}/studies"]
        for label, uid in zip(("", "series", "instances"), uids, strict=False):
            parts.append(f"{'/' + label if label else ''}/{quote(uid)}")
        return "".join(parts)

    # -- STOW-RS ---------------------------------------------------------------------------------------------
    def store_instances(
        self, datastore_id: str, instances: Iterable[bytes], study_uid: str | None = None
    ) -> StowResult:
        """StoreDICOM (or StoreDICOMStudy with ``study_uid``): DICOM Part 10 bytes, synchronously."""
        body, boundary = multipart_body(("application/dicom", data, {}) for data in instances)
        path = self._path(datastore_id, *([study_uid] if study_uid else []))
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        what = f"StoreDICOM{'Study' if study_uid else ''} into datastore {datastore_id}"
        resp = self.request("POST", path, headers=headers, body=body, what=what)
        doc = json.loads(resp.data or b"{}")
        stored = tuple(
            StoredInstance(
                _first(i.get("00081150"), ""), _first(i.get("00081155"), ""), _first(i.get("00081190"))
            )
            for i in (doc.get("00081199") or {}).get("Value", [])
        )
        failed = tuple(
            (_first(i.get("00081150"), ""), _first(i.get("00081155"), ""), _first(i.get("00081197")))
            for i in (doc.get("00081198") or {}).get("Value", [])
        )
        warnings = (
            tuple(v.strip() for v in resp.headers.getlist("Warning"))
            if hasattr(resp.headers, "getlist")
            else ()
        )
        return StowResult(resp.status, stored, failed, warnings)

    # -- QIDO-RS ---------------------------------------------------------------------------------------------
    def _json(self, path: str, what: str, query: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """A DICOM JSON array answer (QIDO results or WADO metadata)."""
        resp = self.request("GET", path, query=query, headers={"Accept": "application/dicom+json"}, what=what)
        body = json.loads(resp.data) if resp.data else []
        if not isinstance(body, list):
            raise AHIRequestError(f"{what}: answer is a {type(body).__name__}, not a DICOM JSON array")
        return body

    def search_studies(self, datastore_id: str, **query: Any) -> list[dict[str, Any]]:
        return self._json(self._path(datastore_id), f"SearchDICOMStudies in datastore {datastore_id}", query)

    def search_series(self, datastore_id: str, study_uid: str, **query: Any) -> list[dict[str, Any]]:
        what = f"SearchDICOMSeries of study {study_uid} (datastore {datastore_id})"
        return self._json(self._path(datastore_id, study_uid) + "/series", what, query)

    def search_instances(
        self, datastore_id: str, study_uid: str, series_uid: str, **query: Any
    ) -> list[dict[str, Any]]:
        what = f"SearchDICOMInstances of series {series_uid} (datastore {datastore_id})"
        return self._json(self._path(datastore_id, study_uid, series_uid) + "/instances", what, query)

    # -- WADO-RS ---------------------------------------------------------------------------------------------
    def series_metadata(
        self, datastore_id: str, study_uid: str, series_uid: str, image_set_id: str | None = None
    ) -> list[dict[str, Any]]:
        what = f"GetDICOMSeriesMetadata of series {series_uid} (study {study_uid}, datastore {datastore_id})"
        query = {"imageSetId": image_set_id} if image_set_id else None
        return self._json(self._path(datastore_id, study_uid, series_uid) + "/metadata", what, query)

    def frames(
        self,
        datastore_id: str,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        numbers: Sequence[int],
        image_set_id: str | None = None,
    ) -> list[bytes]:
        """Frames (1-based numbers) as uncompressed Explicit VR Little Endian sample bytes, in order."""
        path = (
            self._path(datastore_id, study_uid, series_uid, sop_uid)
            + "/frames/"
            + ",".join(map(str, numbers))
        )
        what = f"GetDICOMInstanceFrames {list(numbers)} of instance {sop_uid} (datastore {datastore_id})"
        accept = f'multipart/related; type="application/octet-stream"; transfer-syntax={ELE}'
        query = {"imageSetId": image_set_id} if image_set_id else None
        resp = self.request("GET", path, query=query, headers={"Accept": accept}, what=what)
        content_type = parse_media_type(resp.headers.get("Content-Type") or "")
        boundary = content_type.param("boundary")
        if content_type.name != "multipart/related" or not boundary:
            raise AHIRequestError(f"{what}: answer is {content_type}, not multipart/related", http_status=502)
        try:
            parts = split_multipart(resp.data, boundary)
        except MultipartError as exc:
            raise AHIRequestError(f"{what}: {exc}", http_status=502) from exc
        if len(parts) != len(numbers):
            raise AHIRequestError(f"{what}: {len(parts)} parts for {len(numbers)} frames", http_status=502)
        return [p.body for p in parts]


# -- WADO-RS as a frame source for ImageSetExporter ------------------------------------------------------
def keyword_attributes(obj: Mapping[str, Any], vrs: dict[str, str]) -> dict[str, Any]:
    """PS3.18 F.2 DICOM JSON -> the keyword-keyed attributes of AHI metadata (VRs recorded in ``vrs``);
    pixel data and BulkDataURIs are left out (the frames come from WADO-RS)."""
    out: dict[str, Any] = {}
    for tag, element in obj.items():
        if tag.upper() in PIXEL_TAGS or "BulkDataURI" in element:
            continue
        number = int(tag, 16)
        keyword = datadict.keyword_for_tag(number)
        key = keyword if keyword and datadict.tag_for_keyword(keyword) == number else tag.upper()
        vr = element.get("vr", "UN")
        vrs[key] = vr
        if "InlineBinary" in element:
            out[key] = element["InlineBinary"]
            continue
        values = element.get("Value")
        if values is None:
            out[key] = None
            continue
        if vr == "SQ":
            out[key] = [keyword_attributes(item or {}, vrs) for item in values]
            continue
        if vr == "PN":
            values = [v.get("Alphabetic", "") if isinstance(v, Mapping) else v for v in values]
        out[key] = values[0] if len(values) == 1 else list(values)
    return out


def _client_error(status: int, code: str, message: str, operation: str) -> bce.ClientError:
    return bce.ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


class DicomWebSource:
    """The three native calls :class:`~ahi_connector.exporter.ImageSetExporter` makes, answered through
    WADO-RS for one study: GetImageSet (no versions in DICOMweb), GetImageSetMetadata (series metadata of the
    image set's series, rebuilt as AHI metadata JSON) and GetImageFrame (one uncompressed frame from
    GetDICOMInstanceFrames). Frame IDs are ``<SOPInstanceUID>/<frame number>``.

    DICOMweb metadata carries no frame checksums, so the CRC32 check of the native path cannot run; every
    frame is checked against Rows x Columns x samples x bits, and volumes get the same geometry checks.
    """

    def __init__(
        self, client: DicomWebClient, study_uid: str, series_uids: Sequence[str] | None = None
    ) -> None:
        self.client = client
        self.study_uid = study_uid
        self.series_uids = list(series_uids or [])
        self._series_of: dict[str, str] = {}

    def get_image_set(self, datastoreId: str, imageSetId: str) -> dict[str, Any]:  # noqa: N803 (botocore names)
        return {"datastoreId": datastoreId, "imageSetId": imageSetId, "versionId": None}

    def get_image_set_metadata(self, datastoreId: str, imageSetId: str, **_: Any) -> dict[str, Any]:  # noqa: N803
        series_uids = self.series_uids or [
            _first(s.get("0020000E")) for s in self.client.search_series(datastoreId, self.study_uid)
        ]
        series_docs: dict[str, Any] = {}
        for series_uid in series_uids:
            try:
                instances = self.client.series_metadata(datastoreId, self.study_uid, series_uid, imageSetId)
            except AHIRequestError as exc:
                if exc.http_status == 404 and not self.series_uids:
                    continue  # a series of the study that lives in another image set
                raise _client_error(
                    exc.http_status,
                    "ResourceNotFoundException" if exc.http_status == 404 else "DICOMwebError",
                    str(exc),
                    "GetDICOMSeriesMetadata",
                ) from exc
            docs = {}
            for inst in instances:
                vrs: dict[str, str] = {}
                attrs = keyword_attributes(inst, vrs)
                sop = str(attrs.get("SOPInstanceUID"))
                has_pixels = any(t in inst for t in PIXEL_TAGS)
                count = int(attrs.get("NumberOfFrames") or 1) if has_pixels else 0
                self._series_of[sop] = series_uid
                docs[sop] = {
                    "DICOM": attrs,
                    "DICOMVRs": vrs,
                    "StoredTransferSyntaxUID": ELE,
                    "ImageFrames": [{"ID": f"{sop}/{n}"} for n in range(1, count + 1)],
                }
            series_docs[series_uid] = {"DICOM": {}, "Instances": docs}
        if not series_docs:
            raise _client_error(
                404,
                "ResourceNotFoundException",
                f"no series of study {self.study_uid} in image set {imageSetId}",
                "GetDICOMSeriesMetadata",
            )
        document = {
            "DatastoreID": datastoreId,
            "ImageSetID": imageSetId,
            "Patient": {"DICOM": {}},
            "Study": {"DICOM": {"StudyInstanceUID": self.study_uid}, "Series": series_docs},
        }
        return {
            "imageSetMetadataBlob": io.BytesIO(json.dumps(document).encode()),
            "contentType": "application/json",
        }

    def get_image_frame(  # noqa: N803 (botocore's parameter names)
        self, datastoreId: str, imageSetId: str, imageFrameInformation: Mapping[str, str]
    ) -> dict[str, Any]:
        sop, _, number = imageFrameInformation["imageFrameId"].rpartition("/")
        try:
            (data,) = self.client.frames(
                datastoreId, self.study_uid, self._series_of[sop], sop, [int(number)], imageSetId
            )
        except AHIRequestError as exc:
            code = "ThrottlingException" if exc.http_status == 429 else "DICOMwebError"
            raise _client_error(exc.http_status, code, str(exc), "GetDICOMInstanceFrames") from exc
        return {"imageFrameBlob": io.BytesIO(data), "contentType": "application/octet-stream"}


# -- STOW-RS write-back helpers -------------------------------------------------------------------------
def require_stored(result: StowResult, path: Any) -> StowResult:
    """``result`` when every instance was stored; else an AHIRequestError naming the failures and reasons."""
    if result.failed or not result.stored:
        failures = ", ".join(
            f"{sop or '?'} (FailureReason {f'0x{reason:04X}' if reason is not None else 'none'})"
            for _cls, sop, reason in result.failed
        )
        reasons = "; ".join(result.warnings) or "no reason given"
        raise AHIRequestError(
            f"StoreDICOM of {path}: HTTP {result.status}, not stored: {failures or 'nothing stored'}; "
            f"{reasons}",
            http_status=502,
        )
    return result


def locate_image_sets(ahi: Any, datastore_id: str, path: Any) -> list[str]:
    """Image sets holding the series of the DICOM file at ``path`` (SearchImageSets on its Series Instance
    UID), for STOW-RS answers whose RetrieveURL does not name the image set."""
    import pydicom

    series_uid = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
    criteria = {"filters": [{"values": [{"DICOMSeriesInstanceUID": series_uid}], "operator": "EQUAL"}]}
    ids: list[str] = []
    try:
        for page in ahi.get_paginator("search_image_sets").paginate(
            datastoreId=datastore_id, searchCriteria=criteria
        ):
            ids += [
                s["imageSetId"]
                for s in page.get("imageSetsMetadataSummaries", [])
                if s["imageSetId"] not in ids
            ]
    except (bce.ClientError, bce.BotoCoreError) as exc:
        raise AHIRequestError(
            f"SearchImageSets for series {series_uid} (datastore {datastore_id}): {exc}"
        ) from exc
    return ids

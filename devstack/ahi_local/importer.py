"""DICOM import jobs: read P10 files from S3, store frames and versioned image sets, write the AHI job output.

Grouping (as AHI does): an image set holds one DICOM series. Instances are grouped by the study-level
elements StudyInstanceUID, PatientID, StudyDate, AccessionNumber, StudyID and the series-level elements
SeriesInstanceUID, SeriesNumber. A group joins the primary image set of the same study + series as a new
version (a re-imported SOP instance replaces the old one in that version; older versions keep it). If its
grouping elements conflict with that primary image set, or with another primary image set of the same study,
it becomes a new **non-primary** image set; nothing is ever overwritten silently.

Output under ``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>/``: ``job-output-manifest.json``
(``jobSummary``), ``SUCCESS/success.ndjson`` (one ``{"inputFile", "importResponse": {"imageSetId",
"isPrimary"}}`` per imported file) and ``FAILURE/failure.ndjson`` (one ``{"inputFile", "exception":
{"exceptionType", "message"}}`` per rejected file). Every input object lands in exactly one of the two lists.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ahi_connector.import_jobs import job_output_location
from ahi_connector.s3uri import S3Uri

from . import metadata
from .errors import StorageError
from .frames import FrameEncodingError, encode_instance
from .ids import new_id, now
from .records import ImageSetRecord, JobRecord
from .store import Store

logger = logging.getLogger(__name__)

STUDY_GROUPING = ("StudyInstanceUID", "PatientID", "StudyDate", "AccessionNumber", "StudyID")
SERIES_GROUPING = ("SeriesInstanceUID", "SeriesNumber")
SUMMARY_NAMES = {
    "StudyInstanceUID": "DICOMStudyInstanceUID",
    "PatientID": "DICOMPatientId",
    "StudyDate": "DICOMStudyDate",
    "AccessionNumber": "DICOMAccessionNumber",
    "StudyID": "DICOMStudyId",
    "SeriesInstanceUID": "DICOMSeriesInstanceUID",
    "SeriesNumber": "DICOMSeriesNumber",
}
REQUIRED = (
    ("SOPInstanceUID", "(0008,0018) SOP Instance UID"),
    ("StudyInstanceUID", "(0020,000D) Study Instance UID"),
    ("SeriesInstanceUID", "(0020,000E) Series Instance UID"),
)


@dataclasses.dataclass(frozen=True)
class FileFailure:
    input_file: str
    exception_type: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "inputFile": self.input_file,
            "exception": {"exceptionType": self.exception_type, "message": self.message},
        }


@dataclasses.dataclass(frozen=True)
class PreparedInstance:
    input_file: str
    grouping: tuple[tuple[str, str], ...]
    flat: metadata.FlatInstance


def _normalise(value: Any) -> str:
    return "" if value is None else str(value).strip()


def grouping_of(ds: pydicom.Dataset) -> tuple[tuple[str, str], ...]:
    return tuple((k, _normalise(ds.get(k))) for k in STUDY_GROUPING + SERIES_GROUPING)


def grouping_of_record(record: ImageSetRecord) -> dict[str, str]:
    return {k: _normalise(record.dicom_tags.get(name)) for k, name in SUMMARY_NAMES.items()}


def _fix_transfer_syntax(ds: pydicom.Dataset) -> None:
    """Files without (0002,0010) get the syntax pydicom read them with."""
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, _little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def prepare_instance(
    store: Store, datastore_id: str, input_file: str, body: bytes, written: list[str] | None = None
) -> PreparedInstance | FileFailure:
    """Parse one file, store its frames, return its flat metadata (or why it was rejected). The IDs of the
    frames stored are appended to ``written``. A store that cannot write raises
    :class:`~devstack.ahi_local.errors.StorageError`: that is the server's failure, not the file's."""
    try:
        ds = pydicom.dcmread(io.BytesIO(body))
    except InvalidDicomError as exc:
        return FileFailure(input_file, "InvalidDICOMFile", f"not a DICOM Part 10 file: {exc}")
    except Exception as exc:  # pydicom raises many types for damaged files
        return FileFailure(input_file, "InvalidDICOMFile", f"cannot parse DICOM: {type(exc).__name__}: {exc}")
    for keyword, label in REQUIRED:
        if not _normalise(ds.get(keyword)):
            return FileFailure(input_file, "MissingRequiredElement", f"{label} is missing or empty")
    try:
        _fix_transfer_syntax(ds)
        encoded = encode_instance(ds, store.datastore(datastore_id).lossless_storage_format)
        frames = [
            metadata.FrameInfo(new_id(), len(f.data), f.min_value, f.max_value, f.width, f.height, f.checksum)
            for f in (encoded.frames if encoded else [])
        ]
        flat = metadata.flat_instance(ds, encoded.stored_transfer_syntax if encoded else None, frames)
        json.dumps(flat.dicom, allow_nan=False)  # fail before any frame is stored on values JSON cannot hold
        for info, frame in zip(frames, encoded.frames if encoded else [], strict=True):
            store.write_frame(datastore_id, info.frame_id, frame.data, frame.content_type)
            if written is not None:
                written.append(info.frame_id)
    except StorageError:
        raise
    except FrameEncodingError as exc:
        return FileFailure(input_file, "InvalidPixelData", f"SOP instance {ds.SOPInstanceUID}: {exc}")
    except Exception as exc:
        logger.debug("instance %s rejected", input_file, exc_info=True)
        return FileFailure(
            input_file,
            "InvalidDICOMFile",
            f"SOP instance {ds.get('SOPInstanceUID')}: {type(exc).__name__}: {exc}",
        )
    return PreparedInstance(input_file, grouping_of(ds), flat)


class ImportRunner:
    """Runs import jobs one at a time on a background thread; files within a job on ``workers`` threads."""

    def __init__(self, store: Store, s3_factory: Callable[[], Any], workers: int = 2) -> None:
        self.store = store
        self.s3_factory = s3_factory
        self.workers = max(1, workers)
        self._queue: queue.Queue[JobRecord | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="ahi-local-import", daemon=True)

    def start(self) -> None:
        for jobs in self.store.jobs.values():
            for job in sorted(jobs.values(), key=lambda j: j.submitted_at):
                if job.status in ("SUBMITTED", "IN_PROGRESS"):
                    logger.info("re-queueing import job %s interrupted by a restart", job.job_id)
                    job.status = "SUBMITTED"
                    self.store.save_job(job)
                    self._queue.put(job)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)

    def submit(self, job: JobRecord) -> None:
        self.store.save_job(job)
        self._queue.put(job)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._run(job)

    def _run(self, job: JobRecord) -> None:
        job.status = "IN_PROGRESS"
        self.store.save_job(job)
        try:
            message = self._import(job)
            job.status, job.message = "COMPLETED", message
        except Exception as exc:
            logger.exception("import job %s failed", job.job_id)
            job.status, job.message = "FAILED", f"{type(exc).__name__}: {exc}"[:2000]
        job.ended_at = now()
        if job.datastore_id in self.store.datastores:
            self.store.save_job(job)
        logger.info("import job %s %s: %s", job.job_id, job.status, job.message)

    def _import(self, job: JobRecord) -> str:
        s3 = self.s3_factory()
        check_output_location(s3, job)
        source = S3Uri.parse(job.input_s3_uri, "inputS3Uri")
        keys = [
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=source.bucket, Prefix=source.prefix
            )
            for obj in page.get("Contents", [])
            if not obj["Key"].endswith("/")
        ]
        if not keys:
            raise ValueError(f"no objects under inputS3Uri {job.input_s3_uri}")

        written: list[str] = []

        def one(key: str) -> PreparedInstance | FileFailure:
            uri = S3Uri(source.bucket, key).uri
            try:
                body = s3.get_object(Bucket=source.bucket, Key=key)["Body"].read()
            except Exception as exc:
                return FileFailure(uri, "S3ReadError", f"cannot read {uri}: {exc}")
            return prepare_instance(self.store, job.datastore_id, uri, body, written)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="ahi-local-file") as pool:
            futures = [pool.submit(one, key) for key in keys]
            outcomes = [f.exception() or f.result() for f in futures]
        storage = next((r for r in outcomes if isinstance(r, StorageError)), None)
        if storage is not None:
            self._fail_whole_job(s3, job, keys, written, storage)
        unexpected = next((r for r in outcomes if isinstance(r, BaseException)), None)
        if unexpected is not None:
            self.store.discard_frames(job.datastore_id, written)
            raise unexpected
        prepared = [r for r in outcomes if isinstance(r, PreparedInstance)]
        failures = [r for r in outcomes if isinstance(r, FileFailure)]
        commits: list[tuple[str, int]] = []
        try:
            success, image_sets = commit_groups(self.store, job.datastore_id, prepared, commits)
            write_job_output(s3, job, keys, success, failures, image_sets)
        except BaseException:
            # Commit and job output are one step: without its output the job created nothing.
            for image_set_id, version_id in reversed(commits):
                self.store.rollback_version(job.datastore_id, image_set_id, version_id)
            self.store.discard_frames(job.datastore_id, written)
            raise
        return f"{len(success)} of {len(keys)} files imported into {len(image_sets)} image sets"

    def _fail_whole_job(
        self, s3: Any, job: JobRecord, keys: list[str], written: list[str], error: StorageError
    ) -> None:
        """A store failure: remove what this job stored, report every file as a server error, fail the job."""
        removed = self.store.discard_frames(job.datastore_id, written)
        logger.error(
            "import job %s: the store cannot write (%s); no image set was created or changed, %d stored "
            "frames removed",
            job.job_id,
            error.message,
            removed,
        )
        source = S3Uri.parse(job.input_s3_uri, "inputS3Uri")
        message = f"InternalServerError: ahi-local could not store the import: {error.message}"
        failures = [FileFailure(S3Uri(source.bucket, k).uri, "InternalServerError", message) for k in keys]
        try:
            write_job_output(s3, job, keys, [], failures, {}, server_errors=True)
        except Exception:
            logger.exception("import job %s: cannot write its job output either", job.job_id)
        raise StorageError(
            f"{message}; no image set was created or changed. Free space in the store and run the job again"
        ) from error


def _conflicts(grouping: dict[str, str], record: ImageSetRecord, keys: tuple[str, ...]) -> bool:
    existing = grouping_of_record(record)
    return any(existing[k] != grouping[k] for k in keys)


def _place(store: Store, datastore_id: str, grouping: dict[str, str]) -> tuple[str | None, bool]:
    """(primary image set to add a version to or None, is_primary) for a group of instances."""
    same_study = [
        r
        for r in store.live_image_sets(datastore_id)
        if r.is_primary
        and _normalise(r.dicom_tags.get("DICOMStudyInstanceUID")) == grouping["StudyInstanceUID"]
    ]
    same_series = [
        r
        for r in same_study
        if _normalise(r.dicom_tags.get("DICOMSeriesInstanceUID")) == grouping["SeriesInstanceUID"]
    ]
    if any(_conflicts(grouping, r, STUDY_GROUPING) for r in same_study):
        return None, False
    if same_series:
        if _conflicts(grouping, same_series[0], SERIES_GROUPING):
            return None, False
        return same_series[0].image_set_id, True
    return None, True


def commit_groups(
    store: Store,
    datastore_id: str,
    prepared: list[PreparedInstance],
    commits: list[tuple[str, int]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Commit prepared instances as image set versions; return success lines, {imageSetId: count}. Each
    (image set, version) committed is appended to ``commits`` (so a caller can roll them back)."""
    groups: dict[tuple[tuple[str, str], ...], list[PreparedInstance]] = {}
    for item in prepared:
        groups.setdefault(item.grouping, []).append(item)
    success: list[dict[str, Any]] = []
    image_sets: dict[str, int] = {}
    for grouping, items in groups.items():
        with store.lock:
            target, primary = _place(store, datastore_id, dict(grouping))
            existing: list[metadata.FlatInstance] = []
            if target is not None:
                existing = metadata.flatten_document(store.document(store.image_set(datastore_id, target)))
            new_uids = {item.flat.sop_uid for item in items}
            merged = [inst for inst in existing if inst.sop_uid not in new_uids]
            merged += list({item.flat.sop_uid: item.flat for item in items}.values())

            def build(image_set_id: str, merged: list[metadata.FlatInstance] = merged) -> dict[str, Any]:
                return metadata.build_document(datastore_id, image_set_id, merged)

            status = "IMPORTED" if target else "CREATED"
            record = store.commit_version(datastore_id, target, build, status, is_primary=primary)
            if commits is not None:
                commits.append((record.image_set_id, record.latest_version))
        image_sets[record.image_set_id] = image_sets.get(record.image_set_id, 0) + len(items)
        for item in items:
            success.append(
                {
                    "inputFile": item.input_file,
                    "importResponse": {"imageSetId": record.image_set_id, "isPrimary": record.is_primary},
                }
            )
    return success, image_sets


def _put_text(s3: Any, location: S3Uri, key: str, text: str, content_type: str) -> None:
    s3.put_object(Bucket=location.bucket, Key=key, Body=text.encode(), ContentType=content_type)


def _output_base(job: JobRecord) -> tuple[S3Uri, str]:
    """(the outputS3Uri, the key prefix of this job's output under it)."""
    out = S3Uri.parse(job.output_s3_uri, "outputS3Uri")
    return out, job_output_location(job.output_s3_uri, job.datastore_id, job.job_id).key


def check_output_location(s3: Any, job: JobRecord) -> None:
    """Fail the job before anything is stored when its outputS3Uri cannot be written (as AHI checks the
    output location up front): a probe object is written and removed."""
    out, base = _output_base(job)
    probe = f"{base}/.write-check"
    try:
        s3.put_object(Bucket=out.bucket, Key=probe, Body=b"")
        s3.delete_object(Bucket=out.bucket, Key=probe)
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
        raise ValueError(
            f"outputS3Uri {job.output_s3_uri} cannot be written ({code}: {exc}); nothing was imported. "
            "Create the bucket or grant the data access role s3:PutObject, then start the job again"
        ) from exc


def write_job_output(
    s3: Any,
    job: JobRecord,
    keys: list[str],
    success: list[dict[str, Any]],
    failures: list[FileFailure],
    image_sets: dict[str, int],
    server_errors: bool = False,
) -> None:
    out, base = _output_base(job)
    summary = {
        "jobId": job.job_id,
        "datastoreId": job.datastore_id,
        "inputS3Uri": job.input_s3_uri,
        "outputS3Uri": job.job_output_uri,
        "successOutputS3Uri": S3Uri(out.bucket, base).child("SUCCESS").uri + "/",
        "failureOutputS3Uri": S3Uri(out.bucket, base).child("FAILURE").uri + "/",
        "numberOfScannedFiles": len(keys),
        "numberOfImportedFiles": len(success),
        "numberOfFilesWithCustomerError": 0 if server_errors else len(failures),
        "numberOfFilesWithServerError": len(failures) if server_errors else 0,
        "numberOfGeneratedImageSets": len(image_sets),
        "imageSetsSummary": [
            {"imageSetId": image_set_id, "numberOfMatchedSOPInstances": count}
            for image_set_id, count in image_sets.items()
        ],
    }
    ndjson = "application/x-ndjson"
    _put_text(
        s3, out, f"{base}/SUCCESS/success.ndjson", "".join(json.dumps(s) + "\n" for s in success), ndjson
    )
    _put_text(
        s3,
        out,
        f"{base}/FAILURE/failure.ndjson",
        "".join(json.dumps(f.to_json()) + "\n" for f in failures),
        ndjson,
    )
    _put_text(
        s3, out, f"{base}/job-output-manifest.json", json.dumps({"jobSummary": summary}), "application/json"
    )

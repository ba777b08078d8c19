"""The one client for AWS HealthImaging DICOM import jobs: start, wait, read what the job wrote.

An import job (``StartDICOMImportJob``) reads DICOM P10 objects under ``inputS3Uri`` and writes its results
under ``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>/``: ``job-output-manifest.json``,
``SUCCESS/success.ndjson`` (one line per imported file, ``importResponse.imageSetId`` names the image set it
landed in) and ``FAILURE/failure.ndjson`` (one line per rejected file, the reason under ``exception``). The
functions take boto3 clients from the caller, so the same code drives AWS, ``ahi-local`` and the CLI's dry-run
recorder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from .errors import AHIError
from .s3uri import S3Uri

logger = logging.getLogger(__name__)

FINAL_STATES = frozenset({"COMPLETED", "FAILED"})
ACTIVE_STATES = frozenset({"SUBMITTED", "IN_PROGRESS"})


class ImportJobError(AHIError):
    """An import job could not be started, did not finish in time, or its output cannot be read."""


@dataclasses.dataclass(frozen=True)
class ImportFailure:
    """One file the job rejected, with the reason AWS gives."""

    input_file: str
    reason: str


@dataclasses.dataclass(frozen=True)
class JobOutput:
    """What an import job wrote under ``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>/``."""

    manifest: dict[str, Any]
    success: list[dict[str, Any]]
    failure: list[dict[str, Any]]

    @property
    def image_set_ids(self) -> list[str]:
        """Distinct image set IDs of the success lines, in first-seen order."""
        ids = []
        for number, line in enumerate(self.success, 1):
            try:
                ids.append(str(line["importResponse"]["imageSetId"]))
            except (KeyError, TypeError) as exc:
                raise ImportJobError(
                    f"success.ndjson line {number} has no importResponse.imageSetId: {str(line)[:200]}"
                ) from exc
        return list(dict.fromkeys(ids))

    @property
    def failures(self) -> list[ImportFailure]:
        """The failure lines as (input file, reason)."""
        return [
            ImportFailure(str(line.get("inputFile", line.get("file", "?"))), failure_reason(line))
            for line in self.failure
        ]


def failure_reason(line: dict[str, Any]) -> str:
    """The human reason of one failure.ndjson line (AWS nests it under ``exception``)."""
    exc = line.get("exception")
    if isinstance(exc, dict):
        kind, message = exc.get("exceptionType", ""), exc.get("message", "")
        return f"{kind}: {message}".strip(": ") or json.dumps(exc)
    for key in ("reason", "message", "error", "exception"):
        if line.get(key):
            return str(line[key])
    return json.dumps(line)


def job_output_location(output_s3_uri: str, datastore_id: str, job_id: str) -> S3Uri:
    """The folder an import job writes its results to, ``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>``.

    ``output_s3_uri`` may already be that folder (AWS reports it in ``GetDICOMImportJob``); it is not nested
    twice.
    """
    out = S3Uri.parse(output_s3_uri, "outputS3Uri")
    folder = f"{datastore_id}-DicomImport-{job_id}"
    return out if out.key.rsplit("/", 1)[-1] == folder else out.child(folder)


def start_import_job(
    ahi: Any,
    datastore_id: str,
    input_s3_uri: str,
    output_s3_uri: str,
    role_arn: str,
    job_name: str = "ahi-spleen-import",
    client_token: str | None = None,
) -> str:
    """``StartDICOMImportJob``; return the job ID. ``client_token`` makes a retried start idempotent."""
    started = ahi.start_dicom_import_job(
        jobName=job_name,
        dataAccessRoleArn=role_arn,
        clientToken=client_token or uuid.uuid4().hex,
        datastoreId=datastore_id,
        inputS3Uri=input_s3_uri,
        outputS3Uri=output_s3_uri,
    )
    return str(started["jobId"])


def wait_for_import_job(
    ahi: Any,
    datastore_id: str,
    job_id: str,
    timeout_s: float = 600.0,
    max_interval_s: float = 1.0,
    on_status: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Poll ``GetDICOMImportJob`` (backing off to ``max_interval_s``) until COMPLETED or FAILED.

    Returns ``jobProperties``. ``on_status(status, elapsed_s)`` is called after every poll (progress output).
    Raises :class:`ImportJobError` naming the job and its last state when ``timeout_s`` passes first.
    """
    started = time.monotonic()
    delay = min(0.05, max_interval_s)
    while True:
        props = dict(ahi.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)["jobProperties"])
        elapsed = time.monotonic() - started
        if on_status is not None:
            on_status(str(props["jobStatus"]), elapsed)
        if props["jobStatus"] in FINAL_STATES:
            return props
        if elapsed > timeout_s:
            raise ImportJobError(
                f"import job {job_id} of datastore {datastore_id} still {props['jobStatus']} after "
                f"{timeout_s:.0f} s; check it with GetDICOMImportJob and raise the timeout if it progresses"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, max_interval_s)


def _read_text(s3: Any, location: S3Uri) -> str:
    """The object's text, ``""`` when it (or its bucket) does not exist."""
    try:
        return str(s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read().decode("utf-8"))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
            return ""
        raise


def _read_json(s3: Any, location: S3Uri) -> dict[str, Any]:
    body = _read_text(s3, location)
    try:
        return dict(json.loads(body)) if body.strip() else {}
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ImportJobError(f"{location.uri} is not a JSON object: {body[:200]!r}") from exc


def _read_ndjson(s3: Any, location: S3Uri) -> list[dict[str, Any]]:
    body = _read_text(s3, location)
    lines = []
    for number, line in enumerate(body.splitlines(), 1):
        if line.strip():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ImportJobError(f"{location.uri} line {number} is not JSON: {line[:200]!r}") from exc
    return lines


def read_job_output(s3: Any, output_s3_uri: str, datastore_id: str, job_id: str) -> JobOutput:
    """Read the manifest and the SUCCESS / FAILURE lists of a finished job (empty when absent)."""
    base = job_output_location(output_s3_uri, datastore_id, job_id)
    return JobOutput(
        manifest=_read_json(s3, base.child("job-output-manifest.json")),
        success=_read_ndjson(s3, base.child("SUCCESS", "success.ndjson")),
        failure=_read_ndjson(s3, base.child("FAILURE", "failure.ndjson")),
    )

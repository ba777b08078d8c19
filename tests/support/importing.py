"""A real import through boto3: upload a folder to (moto) S3, start an import job, wait, read output."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ROLE_ARN = "arn:aws:iam::123456789012:role/ahi-import-test"


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """A finished import job and its output under ``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>/``."""

    job_id: str
    job_status: str
    job_properties: dict[str, Any]
    manifest: dict[str, Any]
    success: list[dict[str, Any]]
    failure: list[dict[str, Any]]

    @property
    def image_set_ids(self) -> list[str]:
        """Distinct image set IDs named by the success lines, in first-seen order."""
        ids = [line["importResponse"]["imageSetId"] for line in self.success]
        return list(dict.fromkeys(ids))


def create_datastore(ahi: Any, name: str = "test-datastore", timeout_s: float = 30.0) -> str:
    """Create a datastore and wait until it is ACTIVE; return its ID."""
    datastore_id = ahi.create_datastore(datastoreName=name, clientToken=uuid.uuid4().hex)["datastoreId"]
    deadline = time.monotonic() + timeout_s
    while ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]["datastoreStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(f"datastore {datastore_id} not ACTIVE after {timeout_s} s")
        time.sleep(0.1)
    return datastore_id


def ensure_bucket(s3: Any, bucket: str) -> None:
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)


def upload_folder(s3: Any, folder: str | Path, bucket: str, prefix: str) -> list[str]:
    """Upload every file under ``folder`` to ``s3://bucket/prefix/<relative path>``; return keys."""
    ensure_bucket(s3, bucket)
    folder = Path(folder)
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"{prefix.rstrip('/')}/{path.relative_to(folder).as_posix()}"
        s3.upload_file(str(path), bucket, key)
        keys.append(key)
    return keys


def _read_ndjson(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except (s3.exceptions.NoSuchKey, s3.exceptions.NoSuchBucket):
        return []
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def wait_for_job(ahi: Any, datastore_id: str, job_id: str, timeout_s: float = 300.0) -> dict[str, Any]:
    """Poll GetDICOMImportJob until COMPLETED or FAILED; return jobProperties."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        props = ahi.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)["jobProperties"]
        if props["jobStatus"] in ("COMPLETED", "FAILED"):
            return props
        if time.monotonic() > deadline:
            raise TimeoutError(f"import job {job_id} in datastore {datastore_id} still {props['jobStatus']}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def run_import(
    ahi: Any,
    s3: Any,
    datastore_id: str,
    bucket: str,
    input_prefix: str,
    output_prefix: str | None = None,
    timeout_s: float = 300.0,
) -> ImportResult:
    """Start an import of ``s3://bucket/input_prefix/`` and wait; return the job and its output."""
    output_prefix = output_prefix or f"output/{uuid.uuid4().hex}"
    started = ahi.start_dicom_import_job(
        jobName="test-import",
        dataAccessRoleArn=ROLE_ARN,
        clientToken=uuid.uuid4().hex,
        datastoreId=datastore_id,
        inputS3Uri=f"s3://{bucket}/{input_prefix.strip('/')}/",
        outputS3Uri=f"s3://{bucket}/{output_prefix.strip('/')}/",
    )
    job_id = started["jobId"]
    props = wait_for_job(ahi, datastore_id, job_id, timeout_s)
    base = f"{output_prefix.strip('/')}/{datastore_id}-DicomImport-{job_id}"
    manifest_lines = _read_ndjson(s3, bucket, f"{base}/job-output-manifest.json")
    return ImportResult(
        job_id=job_id,
        job_status=props["jobStatus"],
        job_properties=props,
        manifest=manifest_lines[0] if manifest_lines else {},
        success=_read_ndjson(s3, bucket, f"{base}/SUCCESS/success.ndjson"),
        failure=_read_ndjson(s3, bucket, f"{base}/FAILURE/failure.ndjson"),
    )


def import_folder(
    ahi: Any,
    s3: Any,
    datastore_id: str,
    folder: str | Path,
    bucket: str = "ahi-input",
    timeout_s: float = 300.0,
) -> ImportResult:
    """Upload ``folder`` under a fresh prefix and import it into ``datastore_id``."""
    prefix = f"input/{uuid.uuid4().hex}"
    upload_folder(s3, folder, bucket, prefix)
    return run_import(ahi, s3, datastore_id, bucket, prefix, timeout_s=timeout_s)

"""Import a local folder of DICOM files through the AHI API: upload to S3, start the job, wait, read output.

Works against ``ahi-local`` + any S3-compatible store (moto server) and against real AWS alike; it only uses
boto3 clients handed in by the caller (``ahi-local import`` builds them from endpoint URLs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_ROLE_ARN = "arn:aws:iam::123456789012:role/ahi-local-import"


@dataclasses.dataclass(frozen=True)
class JobOutput:
    """What an import job wrote under ``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>/``."""

    manifest: dict[str, Any]
    success: list[dict[str, Any]]
    failure: list[dict[str, Any]]

    @property
    def image_set_ids(self) -> list[str]:
        """Distinct image set IDs of the success lines, in first-seen order."""
        return list(dict.fromkeys(line["importResponse"]["imageSetId"] for line in self.success))


def ensure_bucket(s3: Any, bucket: str) -> None:
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)


def upload_folder(s3: Any, folder: str | Path, bucket: str, prefix: str) -> list[str]:
    """Upload every file under ``folder`` to ``s3://bucket/prefix/<relative path>``; return the keys."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of DICOM files")
    ensure_bucket(s3, bucket)
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"{prefix.strip('/')}/{path.relative_to(folder).as_posix()}"
        s3.upload_file(str(path), bucket, key)
        keys.append(key)
    logger.info("uploaded %d files from %s to s3://%s/%s/", len(keys), folder, bucket, prefix.strip("/"))
    return keys


def wait_for_job(ahi: Any, datastore_id: str, job_id: str, timeout_s: float = 600.0) -> dict[str, Any]:
    """Poll GetDICOMImportJob (backing off to 1 s) until COMPLETED or FAILED; return ``jobProperties``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        props = ahi.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)["jobProperties"]
        if props["jobStatus"] in ("COMPLETED", "FAILED"):
            return props
        if time.monotonic() > deadline:
            status = props["jobStatus"]
            raise TimeoutError(
                f"import job {job_id} of datastore {datastore_id} still {status} after {timeout_s} s"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def _read_ndjson(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except (s3.exceptions.NoSuchKey, s3.exceptions.NoSuchBucket):
        return []
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def read_job_output(s3: Any, output_s3_uri: str, datastore_id: str, job_id: str) -> JobOutput:
    """Read the manifest and the SUCCESS / FAILURE lists of a finished job (empty when absent)."""
    bucket, _, prefix = output_s3_uri[len("s3://") :].partition("/")
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    base += f"{datastore_id}-DicomImport-{job_id}"
    manifest = _read_ndjson(s3, bucket, f"{base}/job-output-manifest.json")
    return JobOutput(
        manifest=manifest[0] if manifest else {},
        success=_read_ndjson(s3, bucket, f"{base}/SUCCESS/success.ndjson"),
        failure=_read_ndjson(s3, bucket, f"{base}/FAILURE/failure.ndjson"),
    )


def start_import(
    ahi: Any, datastore_id: str, input_s3_uri: str, output_s3_uri: str, role_arn: str = DEFAULT_ROLE_ARN
) -> str:
    """StartDICOMImportJob; return the job ID."""
    started = ahi.start_dicom_import_job(
        jobName="ahi-local-import",
        dataAccessRoleArn=role_arn,
        clientToken=uuid.uuid4().hex,
        datastoreId=datastore_id,
        inputS3Uri=input_s3_uri,
        outputS3Uri=output_s3_uri,
    )
    return str(started["jobId"])


def import_folder(
    ahi: Any,
    s3: Any,
    datastore_id: str,
    folder: str | Path,
    bucket: str,
    prefix: str | None = None,
    timeout_s: float = 600.0,
    role_arn: str = DEFAULT_ROLE_ARN,
) -> tuple[dict[str, Any], JobOutput]:
    """Upload ``folder`` to ``s3://bucket/<prefix>/input/``, import, wait; return (jobProperties, output)."""
    prefix = (prefix or f"ahi-import/{uuid.uuid4().hex}").strip("/")
    upload_folder(s3, folder, bucket, f"{prefix}/input")
    output_uri = f"s3://{bucket}/{prefix}/output/"
    job_id = start_import(ahi, datastore_id, f"s3://{bucket}/{prefix}/input/", output_uri, role_arn)
    props = wait_for_job(ahi, datastore_id, job_id, timeout_s)
    return props, read_job_output(s3, output_uri, datastore_id, job_id)

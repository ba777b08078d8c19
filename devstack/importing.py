"""Import a local folder of DICOM files through the AHI API: upload to S3, start the job, wait, read its
output.

The one import-a-folder path of the dev stack (``ahi-local import``, the demo, benchmarks and tests). It uses
the product's import-job client (:mod:`ahi_connector.import_jobs`) with boto3 clients handed in by the caller,
so it works against ``ahi-local`` + a moto S3 server and against real AWS alike.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from ahi_connector.import_jobs import (
    JobOutput,
    read_job_output,
    start_import_job,
    wait_for_import_job,
)

logger = logging.getLogger(__name__)

#: The role ARN local imports pass (ahi-local checks its shape, as AWS does, not its permissions).
DEFAULT_ROLE_ARN = "arn:aws:iam::123456789012:role/ahi-local-import"


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """A finished import job and what it wrote under ``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>/``."""

    job_id: str
    job_status: str
    job_properties: dict[str, Any]
    output: JobOutput

    @property
    def manifest(self) -> dict[str, Any]:
        return self.output.manifest

    @property
    def success(self) -> list[dict[str, Any]]:
        return self.output.success

    @property
    def failure(self) -> list[dict[str, Any]]:
        return self.output.failure

    @property
    def image_set_ids(self) -> list[str]:
        """Distinct image set IDs named by the success lines, in first-seen order."""
        return self.output.image_set_ids


def ensure_bucket(s3: Any, bucket: str) -> None:
    """Create ``bucket`` unless it exists."""
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


def create_datastore(ahi: Any, name: str = "test-datastore", timeout_s: float = 30.0) -> str:
    """Create a datastore and wait until it is ACTIVE; return its ID."""
    datastore_id = str(ahi.create_datastore(datastoreName=name, clientToken=uuid.uuid4().hex)["datastoreId"])
    deadline = time.monotonic() + timeout_s
    while ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]["datastoreStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(f"datastore {datastore_id} not ACTIVE after {timeout_s} s")
        time.sleep(0.1)
    return datastore_id


def run_import(
    ahi: Any,
    s3: Any,
    datastore_id: str,
    bucket: str,
    input_prefix: str,
    output_prefix: str | None = None,
    timeout_s: float = 300.0,
    role_arn: str = DEFAULT_ROLE_ARN,
) -> ImportResult:
    """Start an import of ``s3://bucket/input_prefix/`` and wait; return the job and its output."""
    output_prefix = output_prefix or f"output/{uuid.uuid4().hex}"
    output_uri = f"s3://{bucket}/{output_prefix.strip('/')}/"
    input_uri = f"s3://{bucket}/{input_prefix.strip('/')}/"
    job_id = start_import_job(ahi, datastore_id, input_uri, output_uri, role_arn, job_name="ahi-local-import")
    props = wait_for_import_job(ahi, datastore_id, job_id, timeout_s)
    output = read_job_output(s3, output_uri, datastore_id, job_id)
    return ImportResult(job_id, str(props["jobStatus"]), props, output)


def import_folder(
    ahi: Any,
    s3: Any,
    datastore_id: str,
    folder: str | Path,
    bucket: str = "ahi-input",
    timeout_s: float = 300.0,
    role_arn: str = DEFAULT_ROLE_ARN,
) -> ImportResult:
    """Upload ``folder`` under a fresh prefix of ``bucket`` and import it into ``datastore_id``."""
    prefix = f"ahi-import/{uuid.uuid4().hex}"
    upload_folder(s3, folder, bucket, f"{prefix}/input")
    return run_import(
        ahi, s3, datastore_id, bucket, f"{prefix}/input", f"{prefix}/output", timeout_s, role_arn
    )


def wait_image_set_settled(
    ahi: Any, datastore_id: str, image_set_id: str, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Poll GetImageSet until the image set is no longer LOCKED (an update, copy or delete finished: AHI does
    them asynchronously, and rejects other writes meanwhile); return its properties. A deleted image set
    answers ResourceNotFoundException once gone, which ends the wait too (then
    ``{"imageSetState": "DELETED"}``)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            props = ahi.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id)
        except ahi.exceptions.ResourceNotFoundException:
            return {"imageSetId": image_set_id, "imageSetState": "DELETED"}
        if props["imageSetState"] != "LOCKED":
            return dict(props)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"image set {image_set_id} of datastore {datastore_id} still LOCKED "
                f"({props.get('imageSetWorkflowStatus')}) after {timeout_s} s"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)

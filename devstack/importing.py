"""A real import through boto3: upload a folder to (moto) S3, start an import job, wait, read its output.

Thin test-facing wrappers over :mod:`devstack.ahi_local.folder_import` (the one import-a-folder path).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from devstack.ahi_local.folder_import import (
    ensure_bucket,
    read_job_output,
    start_import,
    upload_folder,
    wait_for_job,
)

logger = logging.getLogger(__name__)

ROLE_ARN = "arn:aws:iam::123456789012:role/ahi-import-test"
__all__ = [
    "ImportResult",
    "create_datastore",
    "ensure_bucket",
    "import_folder",
    "run_import",
    "upload_folder",
    "wait_for_job",
]


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
    output_uri = f"s3://{bucket}/{output_prefix.strip('/')}/"
    job_id = start_import(
        ahi, datastore_id, f"s3://{bucket}/{input_prefix.strip('/')}/", output_uri, role_arn=ROLE_ARN
    )
    props = wait_for_job(ahi, datastore_id, job_id, timeout_s)
    output = read_job_output(s3, output_uri, datastore_id, job_id)
    return ImportResult(job_id, props["jobStatus"], props, output.manifest, output.success, output.failure)


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

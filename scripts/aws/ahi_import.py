"""``import``: upload a local DICOM folder to S3, run a HealthImaging DICOM import job, report its image sets.

Idempotent: the S3 input prefix and the job name carry a digest of the folder's content, so a re-run uploads
nothing and reuses the finished (or still running) job with that name instead of importing the same files
again. The job's output is read by the project's one import-job client, :mod:`ahi_connector.import_jobs`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ahi_connector.import_jobs import ImportFailure, read_job_output
from scripts.aws.names import Names
from scripts.aws.session import Aws, AwsCliError, tag_map, wait_for
from scripts.aws.state import State
from scripts.aws.storage import ensure_bucket, file_sha256, upload_file

logger = logging.getLogger(__name__)

ACTIVE_JOB_STATES = ("SUBMITTED", "IN_PROGRESS", "COMPLETED")


@dataclass(frozen=True)
class ImportOutcome:
    datastore_id: str
    job_id: str
    job_name: str
    status: str
    input_uri: str
    output_uri: str
    image_set_ids: list[str]
    failures: list[ImportFailure]
    reused_job: bool
    uploaded_files: int
    message: str = ""
    success_lines: list[dict[str, Any]] = field(default_factory=list)


def _folder_digest(files: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(sorted(files)).encode()).hexdigest()[:16]


def find_datastore(aws: Aws, name: str) -> str | None:
    for summary in aws.paginate("medical-imaging", "list_datastores", "datastoreSummaries"):
        if summary.get("datastoreName") == name and summary.get("datastoreStatus") in ("ACTIVE", "CREATING"):
            return str(summary["datastoreId"])
    return None


def wait_datastore_active(aws: Aws, datastore_id: str, timeout_s: float = 900.0) -> None:
    ahi = aws.client("medical-imaging")
    wait_for(
        lambda: str(ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]["datastoreStatus"]),
        what=f"datastore {datastore_id}",
        done={"ACTIVE"},
        failed={"CREATE_FAILED", "DELETED", "DELETING"},
        timeout_s=timeout_s,
        interval_s=5.0,
        progress=aws.settings.progress_mode,
    )


def ensure_datastore(aws: Aws, names: Names, state: State) -> str:
    """The ``<name>-datastore`` datastore (found by name, created and recorded in the state file when
    missing)."""
    datastore_id = find_datastore(aws, names.datastore)
    if datastore_id is None:
        created = aws.call(
            "medical-imaging",
            "create_datastore",
            datastoreName=names.datastore,
            clientToken=uuid.uuid4().hex,
            tags=tag_map(names.name),
        )
        datastore_id = str(created["datastoreId"])
        if aws.dry_run:
            return datastore_id
        state.add("datastores", datastore_id)
    wait_datastore_active(aws, datastore_id)
    return datastore_id


def _find_job(aws: Aws, datastore_id: str, job_name: str) -> dict[str, Any] | None:
    for job in aws.paginate(
        "medical-imaging", "list_dicom_import_jobs", "jobSummaries", datastoreId=datastore_id
    ):
        if job.get("jobName") == job_name and job.get("jobStatus") in ACTIVE_JOB_STATES:
            return dict(job)
    return None


def _wait_job(aws: Aws, datastore_id: str, job_id: str, timeout_s: float) -> dict[str, Any]:
    ahi = aws.client("medical-imaging")
    last: dict[str, Any] = {}

    def status() -> str:
        last.update(ahi.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)["jobProperties"])
        return str(last["jobStatus"])

    wait_for(
        status,
        what=f"import job {job_id} (datastore {datastore_id})",
        done={"COMPLETED", "FAILED"},
        timeout_s=timeout_s,
        interval_s=10.0,
        progress=aws.settings.progress_mode,
    )
    return last


def upload_dicom_folder(aws: Aws, names: Names, folder: Path, bucket: str, state: State) -> tuple[str, int]:
    """Upload ``folder`` under a content-addressed prefix; return (input S3 URI, number of files uploaded)."""
    if not folder.is_dir():
        raise AwsCliError(f"DICOM folder {str(folder)!r} does not exist or is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise AwsCliError(f"DICOM folder {str(folder)!r} holds no files; nothing to import")
    digests = {p: file_sha256(p) for p in files}
    digest = _folder_digest([(p.relative_to(folder).as_posix(), d) for p, d in digests.items()])
    prefix = f"{names.dicom_input_prefix}{digest}/"
    ensure_bucket(aws, bucket, names.name, state)
    uploaded = 0
    bar_off = aws.settings.progress_mode != "bar"
    for path in tqdm(files, desc=f"upload {folder.name}", unit="file", disable=bar_off):
        key = prefix + path.relative_to(folder).as_posix()
        uploaded += upload_file(aws, path, bucket, key, digest=digests[path]).uploaded
    if not aws.dry_run:
        state.add("s3_prefixes", f"s3://{bucket}/{names.s3_root}")
    return f"s3://{bucket}/{prefix}", uploaded


def import_folder(
    aws: Aws,
    names: Names,
    folder: Path,
    bucket: str,
    datastore_id: str,
    role_arn: str,
    state: State,
    timeout_s: float = 3600.0,
) -> ImportOutcome:
    """Upload ``folder``, start (or reuse) the import job, wait, and read its SUCCESS/FAILURE output."""
    input_uri, uploaded = upload_dicom_folder(aws, names, folder, bucket, state)
    output_uri = f"s3://{bucket}/{names.import_output_prefix}"
    job_name = f"{names.name}-{input_uri.rstrip('/').rsplit('/', 1)[-1]}"
    planned_datastore = aws.dry_run and datastore_id.startswith("<")  # would be created by this run
    job = None if planned_datastore else _find_job(aws, datastore_id, job_name)
    reused = job is not None
    if job is None:
        started = aws.call(
            "medical-imaging",
            "start_dicom_import_job",
            jobName=job_name,
            dataAccessRoleArn=role_arn,
            clientToken=uuid.uuid4().hex,
            datastoreId=datastore_id,
            inputS3Uri=input_uri,
            outputS3Uri=output_uri,
        )
        if aws.dry_run:
            return ImportOutcome(
                datastore_id,
                "<dry-run>",
                job_name,
                "NOT_STARTED",
                input_uri,
                output_uri,
                [],
                [],
                False,
                uploaded,
            )
        job_id = str(started["jobId"])
        state.add("import_jobs", f"{datastore_id}/{job_id}")
    else:
        job_id = str(job["jobId"])
        logger.info("reusing import job %s (%s) for the same files", job_id, job["jobStatus"])
    props = _wait_job(aws, datastore_id, job_id, timeout_s)
    output = read_job_output(aws.client("s3"), output_uri, datastore_id, job_id)
    success, failures, ids = output.success, output.failures, output.image_set_ids
    if not aws.dry_run:
        for image_set_id in ids:
            state.add("image_sets", f"{datastore_id}/{image_set_id}")
    return ImportOutcome(
        datastore_id,
        job_id,
        job_name,
        str(props["jobStatus"]),
        input_uri,
        output_uri,
        ids,
        failures,
        reused,
        uploaded,
        str(props.get("message", "")),
        success,
    )

"""AHI events as EventBridge delivers them, synthesised from a local import (ahi-local emits none).

The envelope and ``detail`` fields are those AWS documents for ``source: aws.medical-imaging`` (see
:mod:`trigger.events`); tests and the demo hand these to the Lambda handler exactly as EventBridge would.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from trigger.events import IMAGE_SET_CREATED, IMPORT_JOB_COMPLETED, SOURCE

ACCOUNT = "123456789012"
REGION = "us-east-1"


def envelope(detail_type: str, detail: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """One EventBridge event from AHI: ``detail`` plus the envelope (id, time, region, resources)."""
    datastore = detail.get("datastoreId", "")
    resource = f"arn:aws:medical-imaging:{REGION}:{ACCOUNT}:datastore/{datastore}"
    if detail.get("imageSetId"):
        resource += f"/imageset/{detail['imageSetId']}"
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": SOURCE,
        "account": ACCOUNT,
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [resource],
        "detail": {"imagingVersion": "1.0", **detail},
    }


def image_set_created(datastore_id: str, image_set_id: str) -> dict[str, Any]:
    detail = {
        "datastoreId": datastore_id,
        "imageSetId": image_set_id,
        "imageSetState": "ACTIVE",
        "imageSetWorkflowStatus": "CREATED",
    }
    return envelope(IMAGE_SET_CREATED, detail)


def import_job_completed(ahi: Any, datastore_id: str, job_id: str) -> dict[str, Any]:
    """The ``Import Job Completed`` event of a finished job, its fields read with GetDICOMImportJob."""
    props = ahi.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)["jobProperties"]
    detail = {
        "datastoreId": datastore_id,
        "jobId": job_id,
        "jobName": props.get("jobName", ""),
        "jobStatus": props["jobStatus"],
        "inputS3Uri": props["inputS3Uri"],
        "outputS3Uri": props["outputS3Uri"],
    }
    return envelope(IMPORT_JOB_COMPLETED, detail)

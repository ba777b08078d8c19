"""AWS HealthImaging events on EventBridge (``source: aws.medical-imaging``) → the image sets they concern.

``Image Set Created`` / ``Image Set Updated`` carry ``detail.datastoreId`` and ``detail.imageSetId`` (plus
``imageSetState``, ``imageSetWorkflowStatus`` and ``imagingVersion``; no version ID, so the current one is
read with GetImageSet). ``Import Job Completed`` carries ``detail.datastoreId``, ``jobId``, ``jobStatus`` and
``outputS3Uri``; its image sets are those named by the job's ``SUCCESS/success.ndjson`` under
``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ahi_connector.import_jobs import ImportJobError, read_job_output
from ahi_connector.s3uri import S3UriError

SOURCE = "aws.medical-imaging"
IMAGE_SET_CREATED = "Image Set Created"
IMAGE_SET_UPDATED = "Image Set Updated"
IMPORT_JOB_COMPLETED = "Import Job Completed"
#: The detail-types the handler understands (the rule may subscribe to any of them).
HANDLED = (IMAGE_SET_CREATED, IMAGE_SET_UPDATED, IMPORT_JOB_COMPLETED)


class EventError(ValueError):
    """The event is not an AHI event the handler can act on; the message names the field."""


def _detail(event: dict[str, Any], *keys: str) -> dict[str, Any]:
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise EventError(f"event {event.get('id', '?')} has no 'detail' object")
    missing = [k for k in keys if not detail.get(k)]
    if missing:
        raise EventError(f"{event.get('detail-type')} event {event.get('id', '?')} lacks detail.{missing[0]}")
    return detail


def import_job_image_sets(s3: Any, detail: dict[str, Any]) -> list[str]:
    """Distinct image set IDs of a completed import job, from its success.ndjson (first-seen order)."""
    try:
        output = read_job_output(
            s3, str(detail["outputS3Uri"]), str(detail["datastoreId"]), str(detail["jobId"])
        )
        return output.image_set_ids
    except (S3UriError, ImportJobError) as exc:
        raise EventError(f"Import Job Completed event for job {detail['jobId']}: {exc}") from exc


def image_sets(event: dict[str, Any], s3: Any) -> Iterator[tuple[str, str]]:
    """``(datastoreId, imageSetId)`` for every image set ``event`` announces (none for other event types)."""
    if event.get("source") != SOURCE:
        raise EventError(f"event source {event.get('source')!r} is not {SOURCE!r}")
    kind = event.get("detail-type")
    if kind in (IMAGE_SET_CREATED, IMAGE_SET_UPDATED):
        detail = _detail(event, "datastoreId", "imageSetId")
        yield str(detail["datastoreId"]), str(detail["imageSetId"])
    elif kind == IMPORT_JOB_COMPLETED:
        detail = _detail(event, "datastoreId", "jobId", "outputS3Uri")
        for image_set_id in import_job_image_sets(s3, detail):
            yield str(detail["datastoreId"]), image_set_id
    else:
        raise EventError(f"detail-type {kind!r} is not handled; expected one of {list(HANDLED)}")

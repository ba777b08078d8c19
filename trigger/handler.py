"""The Lambda function behind ``ahi-spleen deploy-trigger``: AHI event → CT pre-filter → InvokeEndpointAsync.

EventBridge invokes it asynchronously with one AHI event (:mod:`trigger.events`). For every image set the
event names it reads the current version (GetImageSet) and the metadata (GetImageSetMetadata), skips what is
not a CT series the model can segment, and submits the rest once per version (:mod:`trigger.submission`; the
EventBridge event id is the claimant, so a Lambda retry of the same event resumes its own claims). When any
submission fails the function raises after trying all of them (and raises at once on an event it cannot read):
Lambda retries the event (already submitted image sets are then duplicates, not second inferences) and, after
its last retry, sends it to the SQS dead-letter queue.

Configuration (environment): ``ENDPOINT_NAME``, ``REQUEST_BUCKET``, ``REQUEST_PREFIX`` (ends with ``/``),
optional ``OUTPUT_S3_URI`` (the request's ``output.s3Uri``), ``MIN_SLICES`` and ``CLAIM_LEASE_SECONDS``. AWS
endpoints come from boto3's usual chain (``AWS_ENDPOINT_URL_<SERVICE>``), which is how the local stack runs
it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from ahi_connector.client import make_client
from trigger.events import EventError, image_sets
from trigger.selection import MIN_SLICES
from trigger.submission import CLAIM_LEASE_S, SubmissionError, Submitter, Target

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

REQUIRED_ENV = ("ENDPOINT_NAME", "REQUEST_BUCKET", "REQUEST_PREFIX")


class ConfigError(RuntimeError):
    """The function's environment lacks a setting; the message names it."""


def target_from_env(env: Mapping[str, str]) -> Target:
    missing = [k for k in REQUIRED_ENV if not env.get(k)]
    if missing:
        raise ConfigError(
            f"the function's environment lacks {', '.join(missing)} (set by ahi-spleen deploy-trigger)"
        )
    return Target(
        env["ENDPOINT_NAME"], env["REQUEST_BUCKET"], env["REQUEST_PREFIX"], env.get("OUTPUT_S3_URI") or None
    )


def require_conditional_writes(s3: Any) -> None:
    """The once-per-version claim needs S3 conditional writes (``IfNoneMatch``/``IfMatch`` on PutObject); an
    old boto3 in the Lambda runtime would fail every claim, so say so once, by name."""
    import botocore

    members = s3.meta.service_model.operation_model("PutObject").input_shape.members
    missing = [name for name in ("IfNoneMatch", "IfMatch") if name not in members]
    if missing:
        raise ConfigError(
            f"botocore {botocore.__version__} in this runtime has no S3 PutObject {'/'.join(missing)} "
            "(conditional writes, needed to submit each image set version once); use a newer Lambda Python "
            "runtime or bundle a newer boto3 in a layer"
        )


def _clients() -> tuple[Any, Any, Any]:
    s3 = make_client("s3", max_attempts=5)
    require_conditional_writes(s3)
    return (
        s3,
        make_client("sagemaker-runtime", max_attempts=5),
        make_client("medical-imaging", max_attempts=5),
    )


def handle(event: dict[str, Any], submitter_for: Callable[[str], Submitter], s3: Any) -> dict[str, Any]:
    """Process one event; return the outcomes. Raises :class:`SubmissionError` when any image set failed."""
    event_id = str(event.get("id") or "")
    if not event_id:
        raise EventError("event has no 'id' (EventBridge always sets one)")
    submitter = submitter_for(event_id)
    outcomes, errors = [], []
    for datastore_id, image_set_id in image_sets(event, s3):
        try:
            outcome = submitter.process(datastore_id, image_set_id)
        except SubmissionError as exc:
            errors.append(str(exc))
            logger.error("%s", exc)
            continue
        logger.info(json.dumps(outcome.to_json()))
        outcomes.append(outcome.to_json())
    if errors:
        raise SubmissionError(
            f"{len(errors)} image set(s) of event {event_id} not submitted: " + "; ".join(errors)
        )
    return {"eventId": event_id, "detailType": event.get("detail-type"), "outcomes": outcomes}


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point (``trigger.handler.lambda_handler``)."""
    target = target_from_env(os.environ)
    s3, runtime, ahi = _clients()
    min_slices = int(os.environ.get("MIN_SLICES") or MIN_SLICES)
    lease_s = float(os.environ.get("CLAIM_LEASE_SECONDS") or CLAIM_LEASE_S)

    def submitter_for(claimant: str) -> Submitter:
        return Submitter(s3, runtime, ahi, target, claimant, lease_s=lease_s, min_slices=min_slices)

    try:
        return handle(event, submitter_for, s3)
    except (
        EventError
    ) as exc:  # a malformed or foreign event: raised, so it ends in the dead-letter queue intact
        logger.error(
            "event %s not handled: %s", event.get("id", "?") if isinstance(event, dict) else "?", exc
        )
        raise

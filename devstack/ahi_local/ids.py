"""Identifiers, ARNs and timestamps in the forms AWS HealthImaging uses."""

from __future__ import annotations

import re
import time
import uuid

from app.untrusted import brief

from .errors import ValidationError

ID_PATTERN = re.compile(r"[0-9a-z]{32}")
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
ARN_PATTERN = re.compile(
    r"arn:aws((-us-gov)|(-iso)|(-iso-b)|(-cn))?:medical-imaging:[a-z0-9-]+:[0-9]{12}:"
    r"datastore/(?P<datastore>[0-9a-z]{32})(/imageset/(?P<imageset>[0-9a-z]{32}))?"
)


def new_id() -> str:
    """A fresh 32-character ``[0-9a-z]`` ID (datastore, image set, job, frame)."""
    return uuid.uuid4().hex


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is a well-formed 32-character ID, else raise ValidationException."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ValidationError(f"{what} {brief(value)} is malformed: expected 32 characters [0-9a-z]")
    return value


def datastore_arn(datastore_id: str, region: str = REGION, account: str = ACCOUNT_ID) -> str:
    return f"arn:aws:medical-imaging:{region}:{account}:datastore/{datastore_id}"


def image_set_arn(
    datastore_id: str, image_set_id: str, region: str = REGION, account: str = ACCOUNT_ID
) -> str:
    return f"{datastore_arn(datastore_id, region, account)}/imageset/{image_set_id}"


def parse_arn(arn: str) -> tuple[str, str | None]:
    """Split a datastore or image set ARN into ``(datastore_id, image_set_id or None)``."""
    match = ARN_PATTERN.fullmatch(arn or "")
    if not match:
        raise ValidationError(f"resourceArn {brief(arn)} is not a medical-imaging datastore or image set ARN")
    return match.group("datastore"), match.group("imageset")


def now() -> float:
    """Current time as epoch seconds (rest-json timestamps are epoch seconds)."""
    return round(time.time(), 3)

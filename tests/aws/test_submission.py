"""Once per image set version (trigger.submission) against moto S3 conditional writes and moto's runtime API:
who may claim, who stands back, who takes over a dead claim, and that a failed submission leaves no claim."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.aws.conftest import BUCKET
from trigger.submission import ImageSetRef, SubmissionError, Submitter, Target

REF = ImageSetRef("a" * 32, "b" * 32, "3")
TARGET = Target("sub-async", BUCKET, "sub/requests/")


@pytest.fixture
def s3(client) -> Any:
    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    return s3


def _submitter(client, s3, claimant: str, **kw: Any) -> Submitter:
    return Submitter(s3, client("sagemaker-runtime"), None, TARGET, claimant, **kw)


def test_first_claim_submits_and_everyone_after_sees_a_duplicate(client, s3) -> None:
    first = _submitter(client, s3, "event-1").submit(REF)
    assert first.status == "submitted" and first.inference_id == "b" * 32 + "-v3"
    body = s3.get_object(Bucket=BUCKET, Key=TARGET.request_key(REF))["Body"].read()
    assert json.loads(body) == {"inputs": [{"datastoreId": REF.datastore_id, "imageSetId": REF.image_set_id}]}
    marker = json.loads(s3.get_object(Bucket=BUCKET, Key=TARGET.marker_key(REF))["Body"].read())
    assert marker["OutputLocation"] == first.output_location and marker["claimant"] == "event-1"
    for claimant in ("event-1", "event-2", "batch-x"):
        again = _submitter(client, s3, claimant).submit(REF)
        assert again.status == "duplicate" and again.output_location == first.output_location


def test_a_live_claim_of_another_submitter_is_left_alone_a_dead_one_taken_over(client, s3) -> None:
    s3.put_object(Bucket=BUCKET, Key=TARGET.request_key(REF), Body=b"{}", Metadata={"claimant": "crashed"})
    waiting = _submitter(client, s3, "event-2").submit(REF)
    assert waiting.status == "in-progress"
    assert s3.head_object(Bucket=BUCKET, Key=TARGET.request_key(REF))["Metadata"]["claimant"] == "crashed"
    # the crashed submitter's own retry (same event id) resumes at once
    resumed = _submitter(client, s3, "crashed").submit(REF)
    assert resumed.status == "submitted"


def test_anyone_takes_over_a_claim_older_than_the_lease(client, s3) -> None:
    s3.put_object(Bucket=BUCKET, Key=TARGET.request_key(REF), Body=b"{}", Metadata={"claimant": "crashed"})
    taken = _submitter(client, s3, "event-3", lease_s=0.0).submit(REF)
    assert taken.status == "submitted"
    head = s3.head_object(Bucket=BUCKET, Key=TARGET.request_key(REF))
    assert head["Metadata"]["claimant"] == "event-3"


def test_a_failed_submission_releases_its_claim(client, s3) -> None:
    import boto3
    from botocore.config import Config

    unreachable = boto3.client(  # nothing listens on port 9: the call fails like a network outage
        "sagemaker-runtime",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2),
    )
    with pytest.raises(
        SubmissionError, match=r"image set b{32} version 3 .* InvokeEndpointAsync on sub-async"
    ):
        Submitter(s3, unreachable, None, TARGET, "event-4").submit(REF)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="sub/").get("Contents", [])
    assert listed == []  # nothing claimed, nothing marked: a retry starts clean
    assert _submitter(client, s3, "event-4").submit(REF).status == "submitted"

"""``invoke`` against moto's sagemaker-runtime (results queued through moto's own API) and moto S3.

The end-to-end run against the ``sagemaker-local`` gateway (real container) is wired separately; here the
CLI's side is checked: request body, TargetModel/async plumbing, S3 polling, printing and exit codes.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from scripts.aws import cli
from scripts.aws.session import AwsCliError
from tests.aws.conftest import BUCKET

NAME = "inv"


def _queue(moto_url: str, path: str, results: list[dict]) -> None:
    data = json.dumps({"account_id": "123456789012", "region": "us-east-1", "results": results}).encode()
    request = urllib.request.Request(
        f"{moto_url}/moto-api/static/sagemaker/{path}",
        data=data,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status in (200, 201)


def _main(aws_env: str, *argv: str) -> int:
    return cli.main(
        [*argv, "--name", NAME, "--endpoint-url", aws_env, "--region", "us-east-1", "--no-progress"]
    )


def test_invoke_realtime_prints_the_response_body(aws_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    report = {"spleenVolumeMl": 182.5, "imageSetId": "b" * 32}
    _queue(
        aws_env,
        "endpoint-results",
        [
            {
                "Body": json.dumps(report),
                "ContentType": "application/json",
                "InvokedProductionVariant": "AllTraffic",
                "CustomAttributes": "",
            }
        ],
    )
    code = _main(
        aws_env,
        "invoke",
        "--datastore-id",
        "a" * 32,
        "--image-set-id",
        "b" * 32,
        "--target-model",
        "model.tar.gz",
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == report


def test_invoke_async_uploads_request_and_prints_the_output_object(
    aws_env: str, client, capsys: pytest.CaptureFixture[str]
) -> None:
    client("s3").create_bucket(Bucket=BUCKET)
    _queue(aws_env, "async-endpoint-results", [{"data": json.dumps({"status": "done", "volume": 1.5})}])
    code = _main(
        aws_env,
        "invoke",
        "--async",
        "--bucket",
        BUCKET,
        "--datastore-id",
        "a" * 32,
        "--image-set-id",
        "c" * 32,
        "--poll-interval",
        "0.2",
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"status": "done", "volume": 1.5}
    s3 = client("s3")
    (obj,) = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{NAME}/async-input/")["Contents"]
    request = json.loads(s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())
    assert request == {"inputs": [{"datastoreId": "a" * 32, "imageSetId": "c" * 32}]}


def test_invoke_async_failure_object_exits_nonzero(
    aws_env: str, client, capsys: pytest.CaptureFixture[str]
) -> None:
    client("s3").create_bucket(Bucket=BUCKET)
    _queue(aws_env, "async-endpoint-results", [{"is_failure": True, "data": "image set not found"}])
    code = _main(
        aws_env, "invoke", "--async", "--bucket", BUCKET, "--body", '{"inputs": []}', "--poll-interval", "0.2"
    )
    assert code == 1
    assert capsys.readouterr().out.strip() == "image set not found"


def test_invoke_without_a_request_says_what_to_pass(ahi_spleen) -> None:
    with pytest.raises(AwsCliError, match=r"pass --body JSON \(or --body-file\), or both --datastore-id"):
        ahi_spleen("invoke", "--name", NAME, "--datastore-id", "a" * 32)
    with pytest.raises(AwsCliError, match=r"--body is not valid JSON"):
        ahi_spleen("invoke", "--name", NAME, "--body", "{not json")
    with pytest.raises(AwsCliError, match=r"--async needs --bucket"):
        ahi_spleen("invoke", "--name", NAME, "--async", "--body", "{}")

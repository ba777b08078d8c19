"""sagemaker-local answers like the SageMaker runtime, through boto3 and the AWS CLI: unknown endpoints,
streaming on a container that does not stream, ModelError's LogStreamArn, async RequestTTLSeconds and
InvocationTimeoutSeconds, and every header constraint of the model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import botocore
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devstack.clients import s3_client
from tests.fidelity.conftest import ENDPOINT, EXPIRED_ID, SM_BUCKET, aws_cli

ACCOUNT = "123456789012"


def _runtime(url: str, validate: bool = True) -> Any:
    config = Config(retries={"max_attempts": 1}, parameter_validation=validate)
    return boto3.client(
        "sagemaker-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing", config=config,
    )  # fmt: skip


def _wait_object(s3: Any, key: str, timeout_s: float = 60) -> bytes:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return bytes(s3.get_object(Bucket=SM_BUCKET, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_unknown_endpoint_is_not_found_as_on_aws(sagemaker_local: str, tmp_path: Path) -> None:
    rt = _runtime(sagemaker_local)
    with pytest.raises(ClientError) as caught:
        rt.invoke_endpoint(EndpointName="no-such-endpoint", TargetModel="model.tar.gz", Body=b"{}")
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert error["Message"] == f"Endpoint no-such-endpoint of account {ACCOUNT} not found."
    [cli] = aws_cli(
        [["sagemaker-runtime", "invoke-endpoint", "--endpoint-name", "no-such-endpoint", "--body", "{}",
          str(tmp_path / "out.json")]],
        {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": sagemaker_local},
    )  # fmt: skip
    assert cli["rc"] != 0 and f"Endpoint no-such-endpoint of account {ACCOUNT} not found." in cli["stderr"]
    ok = rt.invoke_endpoint(EndpointName=ENDPOINT, TargetModel="model.tar.gz", Body=b'{"x": 1}')
    assert json.loads(ok["Body"].read()) == {"echo": {"x": 1}}


def test_response_stream_on_a_container_that_does_not_stream(sagemaker_local: str) -> None:
    with pytest.raises(ClientError) as caught:
        _runtime(sagemaker_local).invoke_endpoint_with_response_stream(EndpointName=ENDPOINT, Body=b"{}")
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationError" and "does not support response streaming" in error["Message"]


def test_model_error_names_the_log_stream(sagemaker_local: str) -> None:
    with pytest.raises(ClientError) as caught:
        _runtime(sagemaker_local).invoke_endpoint(
            EndpointName=ENDPOINT, TargetModel="model.tar.gz", Body=b'{"fail": true}'
        )
    response = caught.value.response
    assert response["Error"]["Code"] == "ModelError" and response["OriginalStatusCode"] == 500
    assert response["LogStreamArn"] == (
        f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{ENDPOINT}"
    )


def test_async_invocation_timeout_and_request_ttl(sagemaker_local: str, moto_s3: str) -> None:
    s3 = s3_client(moto_s3)
    s3.put_object(Bucket=SM_BUCKET, Key="in/slow.json", Body=b'{"sleep": 3}')
    rt = _runtime(sagemaker_local)
    accepted = rt.invoke_endpoint_async(
        EndpointName=ENDPOINT,
        InputLocation=f"s3://{SM_BUCKET}/in/slow.json",
        InferenceId="slow-one",
        InvocationTimeoutSeconds=1,
    )
    assert accepted["FailureLocation"] == f"s3://{SM_BUCKET}/async-failed/slow-one-error.out"
    failure = json.loads(_wait_object(s3, "async-failed/slow-one-error.out"))
    assert "timed out while waiting for a response from container" in failure["error"]
    expired = json.loads(_wait_object(s3, f"async-failed/{EXPIRED_ID}-error.out"))
    assert "not processed within its RequestTTLSeconds (60 s" in expired["error"]
    with pytest.raises(ClientError, match="at 'RequestTTLSeconds' failed to satisfy constraint: Member must "
                                          "have value greater than or equal to 60"):  # fmt: skip
        _runtime(sagemaker_local, validate=False).invoke_endpoint_async(
            EndpointName=ENDPOINT, InputLocation=f"s3://{SM_BUCKET}/in/slow.json", RequestTTLSeconds=59
        )


def test_every_header_length_and_range_of_the_runtime_model_is_enforced(sagemaker_local: str) -> None:
    """Each header member's ``max`` length and each integer's range from botocore's sagemaker-runtime model,
    for every operation, sent past client-side validation."""
    rt = _runtime(sagemaker_local, validate=False)
    model = rt.meta.service_model
    missed, checked = [], 0
    for name in model.operation_names:
        shape = model.operation_model(name).input_shape
        for member_name, member in shape.members.items():
            if member.serialization.get("location") != "header":
                continue
            meta = member.metadata
            if member.type_name == "string" and "max" in meta:
                value, expect = "a" * (meta["max"] + 1), f"less than or equal to {meta['max']}"
            elif member.type_name == "integer" and "max" in meta:
                value, expect = meta["max"] + 1, f"value less than or equal to {meta['max']}"
            else:
                continue
            params = {"EndpointName": ENDPOINT, member_name: value}
            if "Body" in shape.members:
                params["Body"] = b"{}"
            if "InputLocation" in shape.members and member_name != "InputLocation":
                params["InputLocation"] = f"s3://{SM_BUCKET}/in/x.json"
            checked += 1
            try:
                getattr(rt, botocore.xform_name(name))(**params)
                missed.append(f"{name}.{member_name}: accepted")
            except ClientError as exc:
                error = exc.response["Error"]
                if (
                    error["Code"] != "ValidationError"
                    or f"at '{member_name}'" not in error["Message"]
                    or (expect not in error["Message"])
                ):
                    missed.append(f"{name}.{member_name}: {error['Code']}: {error['Message'][:200]}")
    assert checked >= 20 and not missed, "\n".join(missed)


def test_async_inline_body_output_extension_and_filename(sagemaker_local: str, moto_s3: str) -> None:
    """The current runtime model's InvokeEndpointAsync: an inline Body (up to 128,000 bytes) instead of
    InputLocation (exactly one of the two), S3OutputPathExtension and Filename placing the output."""
    s3 = s3_client(moto_s3)
    rt = _runtime(sagemaker_local)
    accepted = rt.invoke_endpoint_async(
        EndpointName=ENDPOINT,
        Body=b'{"x": 2}',
        ContentType="application/json",
        InferenceId="inline-one",
        S3OutputPathExtension="by-day/2026-12-01",
        Filename="result.json",
    )
    assert accepted["OutputLocation"] == f"s3://{SM_BUCKET}/async-out/by-day/2026-12-01/result.json"
    assert (
        accepted["FailureLocation"] == f"s3://{SM_BUCKET}/async-failed/by-day/2026-12-01/inline-one-error.out"
    )
    assert json.loads(_wait_object(s3, "async-out/by-day/2026-12-01/result.json")) == {"echo": {"x": 2}}

    s3.put_object(Bucket=SM_BUCKET, Key="in/both.json", Body=b"{}")
    with pytest.raises(ClientError, match="Body and InputLocation are mutually exclusive"):
        rt.invoke_endpoint_async(
            EndpointName=ENDPOINT, Body=b"{}", InputLocation=f"s3://{SM_BUCKET}/in/both.json"
        )
    with pytest.raises(ClientError, match="Provide exactly one of Body .* and InputLocation"):
        rt.invoke_endpoint_async(EndpointName=ENDPOINT)
    with pytest.raises(ClientError) as caught:
        rt.invoke_endpoint_async(EndpointName=ENDPOINT, Body=b" " * 128_001)
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert error["Message"] == (
        "1 validation error detected: Value at 'Body' failed to satisfy constraint: Member must have length "
        "less than or equal to 128000"
    )  # Body is sensitive in the model: its value is not echoed

"""``invoke``: call an endpoint through ``sagemaker-runtime`` (real-time with ``TargetModel``, or async via
S3).

Only needs a ``sagemaker-runtime`` client (any ``endpoint_url``: AWS, moto or the local ``sagemaker-local``
gateway) and S3 for the async input/output objects.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from scripts.aws.names import Names
from scripts.aws.session import Aws, AwsCliError, error_code, wait_for
from scripts.aws.state import State
from scripts.aws.storage import read_object

logger = logging.getLogger(__name__)

JSON = "application/json"


def request_body(body: str | None, datastore_id: str | None, image_set_id: str | None) -> bytes:
    """The request JSON: ``body`` as given, or ``{"inputs": [{"datastoreId", "imageSetId"}]}`` (IDs)."""
    if body is not None:
        try:
            json.loads(body)
        except json.JSONDecodeError as exc:
            raise AwsCliError(f"--body is not valid JSON ({exc}): {body[:200]!r}") from exc
        return body.encode()
    if not (datastore_id and image_set_id):
        raise AwsCliError("pass --body JSON (or --body-file), or both --datastore-id and --image-set-id")
    return json.dumps({"inputs": [{"datastoreId": datastore_id, "imageSetId": image_set_id}]}).encode()


@dataclass(frozen=True)
class InvokeResult:
    endpoint_name: str
    content_type: str
    body: bytes
    output_location: str | None = None
    failed: bool = False

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def invoke_realtime(
    aws: Aws, endpoint_name: str, body: bytes, target_model: str | None, content_type: str = JSON
) -> InvokeResult:
    params: dict[str, Any] = {
        "EndpointName": endpoint_name,
        "Body": body,
        "ContentType": content_type,
        "Accept": JSON,
    }
    if target_model:
        params["TargetModel"] = target_model
    try:
        response = aws.client("sagemaker-runtime").invoke_endpoint(**params)
    except Exception as exc:
        code = error_code(exc)
        if code in ("ModelError", "ValidationError", "ValidationException", "ModelNotReadyException"):
            raise AwsCliError(
                f"endpoint {endpoint_name} (TargetModel {target_model or '-'}) rejected the request: {exc}"
            ) from exc
        raise
    return InvokeResult(endpoint_name, str(response.get("ContentType", "")), response["Body"].read())


def invoke_async(
    aws: Aws,
    names: Names,
    endpoint_name: str,
    body: bytes,
    bucket: str,
    state: State,
    content_type: str = JSON,
    timeout_s: float = 900.0,
    interval_s: float = 5.0,
) -> InvokeResult:
    """Upload the request to ``<name>/async-input/``, InvokeEndpointAsync, poll the output (or failure)
    object."""
    input_key = f"{names.async_input_prefix}{uuid.uuid4().hex}.json"
    aws.client("s3").put_object(Bucket=bucket, Key=input_key, Body=body, ContentType=content_type)
    state.add("s3_prefixes", f"s3://{bucket}/{names.s3_root}")
    input_uri = f"s3://{bucket}/{input_key}"
    response = aws.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName=endpoint_name,
        InputLocation=input_uri,
        ContentType=content_type,
        Accept=JSON,
        InvocationTimeoutSeconds=int(min(timeout_s, 3600)),
    )
    output_uri = str(response["OutputLocation"])
    failure_uri = response.get("FailureLocation")
    logger.info("async inference %s: input %s, output %s", response.get("InferenceId"), input_uri, output_uri)
    found: dict[str, Any] = {}

    def status() -> str:
        for label, uri in (("succeeded", output_uri), ("failed", failure_uri)):
            if uri and (data := read_object(aws, uri)) is not None:
                found.update(label=label, uri=uri, data=data)
                return label
        return "pending"

    started = time.monotonic()
    wait_for(
        status,
        what=f"async result {output_uri}",
        done={"succeeded", "failed"},
        timeout_s=timeout_s,
        interval_s=interval_s,
        progress=aws.settings.progress_mode,
    )
    logger.info("async result after %.1f s", time.monotonic() - started)
    return InvokeResult(endpoint_name, JSON, found["data"], found["uri"], failed=found["label"] == "failed")

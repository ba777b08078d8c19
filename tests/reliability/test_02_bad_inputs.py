"""Bad input at every door: the gateway (boto3 InvokeEndpoint), the container's ``/models/{name}/invoke``
and ``/invocations``, and bad model archives. Each gets a 4xx (or a failed load) whose body says why; the
server keeps serving the next good request."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
import psutil
import pytest

from tests.container.conftest import http
from tests.reliability.conftest import JSON, Stack, original

UNKNOWN_ID = "0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class Bad:
    """A bad invocation body and what the container must answer: status, error type, message pattern."""

    body: Callable[[Stack], bytes]
    status: int
    error_type: str
    reason: str
    content_type: str = "application/json"


def _inputs(*items: Any, **top: Any) -> bytes:
    return json.dumps({"inputs": list(items), **top}).encode()


def _good(stack: Stack, name: str = "good0") -> dict[str, str]:
    return stack.cases[name].request()


BAD: dict[str, Bad] = {
    "non-json body": Bad(lambda s: b"{datastoreId: nope", 400, "PayloadError", r"not valid JSON"),
    "empty body": Bad(lambda s: b"", 400, "PayloadError", r"empty request body"),
    "json array": Bad(lambda s: b"[1, 2]", 400, "PayloadError", r"must be a JSON object, not list"),
    "wrong content type": Bad(
        lambda s: _inputs(_good(s)),
        400,
        "PayloadError",
        r"Content-Type 'text/csv' is not supported",
        content_type="text/csv",
    ),
    "missing imageSetId": Bad(
        lambda s: _inputs({"datastoreId": s.datastore_id}),
        400,
        "PayloadError",
        r"inputs\[0\]: request needs exactly one of 'imageSetId' or 'studyInstanceUid', got neither",
    ),
    "missing datastoreId": Bad(
        lambda s: _inputs({"imageSetId": UNKNOWN_ID}),
        400,
        "PayloadError",
        r"inputs\[0\] needs datastoreId",
    ),
    "extra key in input": Bad(
        lambda s: _inputs({**_good(s), "patientName": "x"}),
        400,
        "PayloadError",
        r"unknown key\(s\) in request: 'patientName'",
    ),
    "extra top-level key": Bad(
        lambda s: _inputs(_good(s), debug=True),
        400,
        "PayloadError",
        r"unknown top-level field\(s\) \['debug'\]",
    ),
    "empty inputs": Bad(lambda s: _inputs(), 400, "PayloadError", r'"inputs" must be a non-empty list'),
    "too many inputs": Bad(
        lambda s: _inputs(*[_good(s)] * 17),
        400,
        "PayloadError",
        r'"inputs" has 17 items; at most 16',
    ),
    "datastore ID wrong shape": Bad(
        lambda s: _inputs({"datastoreId": "DS-1", "imageSetId": UNKNOWN_ID}),
        400,
        "PayloadError",
        r"'datastoreId' must be an AWS HealthImaging ID of exactly 32 characters \[0-9a-z\], got 'DS-1'",
    ),
    "image set ID wrong shape": Bad(
        lambda s: _inputs({"datastoreId": s.datastore_id, "imageSetId": UNKNOWN_ID.upper()}),
        400,
        "PayloadError",
        r"'imageSetId' must be an AWS HealthImaging ID",
    ),
    "ID of the wrong type": Bad(
        lambda s: _inputs({"datastoreId": s.datastore_id, "imageSetId": 12345}),
        400,
        "PayloadError",
        r"'imageSetId' must be .* got 12345",
    ),
    "study UID wrong shape": Bad(
        lambda s: _inputs({"datastoreId": s.datastore_id, "studyInstanceUid": "1.2.03.x"}),
        400,
        "PayloadError",
        r"'studyInstanceUid' must be a DICOM UID",
    ),
    "bad output S3 URI": Bad(
        lambda s: _inputs(_good(s), output={"s3Uri": "https://bucket/x"}),
        400,
        "PayloadError",
        r"output.s3Uri='https://bucket/x' is not an S3 URI",
    ),
    "unknown datastore": Bad(
        lambda s: _inputs({"datastoreId": UNKNOWN_ID, "imageSetId": s.cases["good0"].image_set_id}),
        404,
        "ImageSetNotFoundError",
        UNKNOWN_ID,
    ),
    "unknown image set": Bad(
        lambda s: _inputs({"datastoreId": s.datastore_id, "imageSetId": UNKNOWN_ID}),
        404,
        "ImageSetNotFoundError",
        rf"image set {UNKNOWN_ID}",
    ),
    "unknown study": Bad(
        lambda s: _inputs({"datastoreId": s.datastore_id, "studyInstanceUid": "1.2.3.4.5.6.7.8.9"}),
        404,
        "InputNotFoundError",
        r"1\.2\.3\.4\.5\.6\.7\.8\.9",
    ),
    "image set without a CT series": Bad(
        lambda s: _inputs(s.cases["mr_only"].request()),
        422,
        "NoCTSeriesError",
        r"(?i)no CT series",
    ),
    "1-slice CT series": Bad(
        lambda s: _inputs(s.cases["one_slice"].request()),
        422,
        "TooFewSlicesError",
        r"1 (slice|instance)",
    ),
    "unreadable instance metadata": Bad(
        lambda s: _inputs(s.cases["bad_metadata"].request()),
        422,
        "DicomizeError",
        r"instance [0-9.]+ .*\(0018,0050\) SliceThickness: value 'thick' is not valid for VR DS",
    ),
    "RGB CT series": Bad(
        lambda s: _inputs(s.cases["rgb"].request()),
        422,
        "UnsupportedPixelFormatError",
        r"\(0028,0004\) Photometric Interpretation 'RGB'",
    ),
}


def _check_body(body: dict[str, Any], bad: Bad) -> None:
    error = body["error"]
    assert error["type"] == bad.error_type, body
    assert error["httpStatus"] == bad.status, body
    assert body["requestId"], body
    assert re.search(bad.reason, error["message"]), (bad.reason, error["message"])
    assert "Traceback" not in json.dumps(body)


@pytest.mark.parametrize("name", list(BAD))
def test_gateway_door(stack: Stack, name: str) -> None:
    bad = BAD[name]
    response, _ = stack.invoke_error(bad.body(stack), content_type=bad.content_type)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == bad.status, response
    _check_body(original(response), bad)


def _invoke_path(stack: Stack) -> str:
    return f"{stack.container.url}/models/{stack.model_name()}/invoke"


@pytest.mark.parametrize(
    "name", ["non-json body", "wrong content type", "extra key in input", "1-slice CT series"]
)
def test_container_invoke_door(stack: Stack, name: str) -> None:
    bad = BAD[name]
    stack.invoke(stack.cases["good0"].body())  # the gateway has loaded the model into the container
    status, headers, raw = http(
        "POST", _invoke_path(stack), bad.body(stack), {"Content-Type": bad.content_type}
    )
    assert status == bad.status, raw
    assert headers.get("Content-Type", headers.get("content-type", "")).startswith("application/json")
    _check_body(json.loads(raw), bad)


def test_container_invocations_door_needs_a_model_name(stack: Stack) -> None:
    bad = BAD["missing imageSetId"]
    status, _, raw = http(
        "POST", f"{stack.container.url}/invocations?model_name={stack.model_name()}", bad.body(stack), JSON
    )
    assert status == 400, raw
    _check_body(json.loads(raw), bad)
    status, _, raw = http("POST", f"{stack.container.url}/invocations", bad.body(stack), JSON)
    assert 400 <= status < 500, raw
    assert raw, "no reason given"


def test_container_unknown_model_is_404(stack: Stack) -> None:
    status, _, raw = http("POST", f"{stack.container.url}/models/nope/invoke", _inputs(_good(stack)), JSON)
    assert status == 404
    assert "Model not found: nope" in json.loads(raw)["message"]


def _oversized_status(base_url: str, path: str, size: int) -> tuple[int, bytes]:
    """POST ``size`` bytes; the status line and what came with it (the server may answer before the body)."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode())
        try:
            sock.sendall(b" " * size)
        except OSError:
            pass  # refused early: the answer is already in the socket
        reply = b""
        deadline = time.monotonic() + 60
        while b"\r\n\r\n" not in reply and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1]), reply


def test_request_over_6_mb(stack: Stack) -> None:
    body = json.dumps({"inputs": [_good(stack)], "padding": "x" * (6 * 1024 * 1024)}).encode()
    with pytest.raises(botocore.exceptions.ClientError, match=r"limited to 6291456 bytes") as info:
        stack.runtime().invoke_endpoint(
            EndpointName="spleen", TargetModel="model.tar.gz", Body=body, ContentType="application/json"
        )
    assert info.value.response["Error"]["Code"] == "ValidationError"
    status, _ = _oversized_status(stack.container.url, f"/models/{stack.model_name()}/invoke", 7_000_000)
    assert status == 413


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("missing.tar.gz", r"Failed to download model data \(TargetModel 'missing.tar.gz'\)"),
        ("../model.tar.gz", r"TargetModel '../model.tar.gz' must be a relative path"),
        ("not-a-tarball.tar.gz", r"model archive not-a-tarball.tar.gz is not a readable tar.gz"),
    ],
)
def test_unknown_or_unreadable_target_model(stack: Stack, target: str, reason: str) -> None:
    response, _ = stack.invoke_error(stack.cases["good0"].body(), target=target)
    assert response["Error"]["Code"] == "ValidationError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert re.search(reason, response["Error"]["Message"]), response["Error"]["Message"]


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("no-bundle.tar.gz", r"BundleNotFoundError"),
        ("corrupt-model-ts.tar.gz", r"cannot load the spleen bundle"),
    ],
)
def test_broken_model_archive_fails_its_load(stack: Stack, target: str, logged: str) -> None:
    """The load fails (POST /models 500), nothing of it stays registered, the reason is in the container log,
    and the good model keeps serving."""
    from devstack.sagemaker_local.models import model_key

    response, _ = stack.invoke_error(stack.cases["good0"].body(), target=target)
    assert response["Error"]["Code"] == "ModelError"
    assert response["OriginalStatusCode"] == 500
    assert f"failed to load model '{target}'" in response["Error"]["Message"]
    assert "Failed to start workers" in response["OriginalMessage"]
    assert http("GET", f"{stack.container.url}/models/{model_key(target)}")[0] == 404
    deadline = time.monotonic() + 20
    while _processes_of(stack, model_key(target)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_of(stack, model_key(target)) == [], "workers of the failed model are left behind"
    deadline = time.monotonic() + 20  # MMS logs asynchronously
    while not re.search(logged, stack.container.log_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert re.search(logged, stack.container.log_text())
    out = stack.invoke(stack.cases["good1"].body())
    assert out["results"][0]["status"] == "succeeded"


def _processes_of(stack: Stack, model_name: str) -> list[int]:
    pids = []
    for proc in stack.container.tree():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and model_name in proc.cmdline():
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def test_server_keeps_serving_after_every_bad_input(stack: Stack) -> None:
    """After all of the above: both doors answer a good request, and no worker died on the way."""
    out = stack.invoke(stack.cases["good2"].body())
    assert out["results"][0]["report"]["seriesInstanceUid"] == stack.cases["good2"].series_uid
    status, _, raw = http("POST", _invoke_path(stack), stack.cases["good3"].body(), JSON)
    assert status == 200, raw
    assert json.loads(raw)["results"][0]["report"]["seriesInstanceUid"] == stack.cases["good3"].series_uid
    good_invokes_failed = f'"POST /models/{stack.model_name()}/invoke HTTP/1.1" 500'
    assert good_invokes_failed not in stack.container.log_text(), "a worker of the good model died"

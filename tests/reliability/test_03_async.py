"""InvokeEndpointAsync: every accepted request ends in exactly one object in S3 (output or failure), none
lost, none written twice, each holding the outcome of its own input."""

from __future__ import annotations

import json
import time
from typing import Any

from devstack.clients import s3_client
from tests.container.conftest import http
from tests.reliability.conftest import BUCKET, Stack

WAIT_S = 240.0


def _objects(moto: str, prefix: str) -> dict[str, bytes]:
    s3 = s3_client(moto)
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]
    return {key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


def test_every_accepted_async_request_gets_exactly_one_result(stack: Stack) -> None:
    s3 = s3_client(stack.moto)
    good = [stack.cases["good0"], stack.cases["good3"]]
    inputs: dict[str, bytes | None] = {
        "good-0": json.dumps(good[0].request()).encode(),
        "good-1": json.dumps({"inputs": [good[1].request()]}).encode(),
        "not-json": b"\x00\x01 not json",
        "unknown-image-set": json.dumps({"datastoreId": stack.datastore_id, "imageSetId": "f" * 32}).encode(),
        "no-ct": json.dumps(stack.cases["mr_only"].request()).encode(),
        "missing-input-object": None,  # accepted (the gateway reads the input later), then fails
    }
    rt = stack.runtime()
    accepted: dict[str, dict[str, Any]] = {}
    for name, body in inputs.items():
        key = f"async-in/{name}.json"
        if body is not None:
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        resp = rt.invoke_endpoint_async(
            EndpointName="spleen",
            InputLocation=f"s3://{BUCKET}/{key}",
            ContentType="application/json",
            InferenceId=f"rel-{name}",
        )
        assert resp["InferenceId"] == f"rel-{name}"
        accepted[name] = resp

    expected = {
        "good-0": ("out", 200),
        "good-1": ("out", 200),
        "not-json": ("failed", 400),
        "unknown-image-set": ("failed", 404),
        "no-ct": ("failed", 422),
        "missing-input-object": ("failed", 500),
    }
    deadline = time.monotonic() + WAIT_S
    while True:
        outs = _objects(stack.moto, "async-out/rel-")
        fails = _objects(stack.moto, "async-failed/rel-")
        done = {k.split("/")[-1].split(".out")[0].removesuffix("-error") for k in [*outs, *fails]}
        if done >= {f"rel-{n}" for n in inputs} or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    for name, resp in accepted.items():
        out_key = resp["OutputLocation"].removeprefix(f"s3://{BUCKET}/")
        fail_key = resp["FailureLocation"].removeprefix(f"s3://{BUCKET}/")
        written = [k for k in (out_key, fail_key) if k in outs or k in fails]
        assert len(written) == 1, f"{name}: {written} (expected exactly one of {out_key}, {fail_key})"
        where, status = expected[name]
        assert written[0] == (out_key if where == "out" else fail_key), (name, written)
        body = json.loads(outs.get(out_key) or fails[fail_key])
        if where == "out":
            case = good[int(name[-1])]
            (result,) = body["results"]
            assert result["report"]["seriesInstanceUid"] == case.series_uid
            assert result["input"] == case.request()
        elif name == "missing-input-object":
            assert "NoSuchKey" in body["error"] or "does not exist" in body["error"], body
        else:
            assert body["error"]["httpStatus"] == status, body
    assert len(outs) + len(fails) == len(inputs), sorted([*outs, *fails])
    health = json.loads(http("GET", stack.gateway.url + "/_local/health")[2])
    assert {health["asyncJobs"][f"rel-{n}"] for n in inputs} <= {"succeeded", "failed"}

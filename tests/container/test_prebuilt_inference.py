"""model.tar.gz served the way SageMaker's prebuilt PyTorch container serves it (issue 10).

sagemaker-inference's own handler service (``sagemaker_inference.default_handler_service``) in single-model
mode on MMS, the archive extracted to the model directory, ``code/inference.py`` found through the toolkit's
user-module lookup; an asynchronous request (S3 input object → ``<uuid>.out``) through ``sagemaker-local``
against ahi-local.
"""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

import pytest

from devstack.clients import s3_client
from tests.container.conftest import (
    RESULTS_BUCKET,
    Dataset,
    gateway,
    http,
    read_json,
    runtime_client,
    serve,
    service_env,
)

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def prebuilt(moto_s3: str, ahi_local: str, model_store: Path, container_dataset: Dataset, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("opt-ml") / "model"
    with tarfile.open(model_store / "model.tar.gz") as tar:
        names = tar.getnames()
        tar.extractall(model_dir, filter="data")
    assert "code/inference.py" in names and "code/requirements.txt" in names
    env = service_env(moto_s3, ahi_local)
    env.update({"SAGEMAKER_MULTI_MODEL": "false", "SPLEEN_OUTPUT_S3_URI": f"s3://{RESULTS_BUCKET}/prebuilt"})
    args = [
        "--single-model",
        "--model-dir",
        str(model_dir),
        "--handler",
        "sagemaker_inference.default_handler_service",
    ]
    with serve(env, args, timeout_s=300) as container:
        with gateway(
            env,
            container.url,
            str(model_store),
            moto_s3,
            extra=[
                "--async-output",
                f"s3://{RESULTS_BUCKET}/prebuilt-async",
                "--async-container-url",
                container.url,
            ],
        ) as gw:
            yield {"container": container, "gateway": gw, "moto": moto_s3, "data": container_dataset}


def test_invocations_runs_code_inference_py(prebuilt):
    series = prebuilt["data"].series[0]
    body = json.dumps({"datastoreId": series.datastore_id, "imageSetId": series.image_set_id}).encode()
    status, headers, raw = http("POST", prebuilt["container"].url + "/invocations", body, JSON)
    assert status == 200, raw
    out = read_json(raw)
    (result,) = out["results"]
    assert result["report"]["seriesInstanceUid"] == series.series_uid
    # SPLEEN_OUTPUT_S3_URI applies when the body names no output.
    assert result["seg"]["s3Uri"].startswith(f"s3://{RESULTS_BUCKET}/prebuilt/{out['requestId']}/")
    log = prebuilt["container"].log_text()
    assert "sagemaker_inference.default_handler_service" in log


def test_bad_body_is_a_clear_400_and_the_worker_survives(prebuilt):
    url = prebuilt["container"].url + "/invocations"
    status, _, raw = http("POST", url, b'{"datastoreId": "nope"}', JSON)
    assert status == 400
    error = read_json(raw)["error"]
    assert error["type"] == "PayloadError"
    assert "'imageSetId' or 'studyInstanceUid'" in error["message"]
    assert "Traceback" not in raw.decode()
    status, _, raw = http("POST", url, b"not json at all", JSON)
    assert status == 400
    assert "not valid JSON" in read_json(raw)["error"]["message"]


def test_unknown_image_set_is_a_404_error_object(prebuilt):
    ds = prebuilt["data"].datastore_id
    body = json.dumps({"datastoreId": ds, "imageSetId": "f" * 32}).encode()
    status, _, raw = http("POST", prebuilt["container"].url + "/invocations", body, JSON)
    assert status == 404
    out = read_json(raw)
    assert out["error"]["httpStatus"] == 404
    assert "f" * 32 in out["error"]["message"]
    assert "Traceback" not in raw.decode()
    # Same worker, next request fine.
    good = prebuilt["data"].series[1]
    body = json.dumps({"datastoreId": good.datastore_id, "imageSetId": good.image_set_id}).encode()
    assert http("POST", prebuilt["container"].url + "/invocations", body, JSON)[0] == 200


def test_async_request_end_to_end(prebuilt):
    s3 = s3_client(prebuilt["moto"])
    series = prebuilt["data"].series[2]
    s3.put_object(
        Bucket=RESULTS_BUCKET,
        Key="prebuilt-in/request.json",
        Body=json.dumps({"datastoreId": series.datastore_id, "imageSetId": series.image_set_id}),
    )
    s3.put_object(
        Bucket=RESULTS_BUCKET,
        Key="prebuilt-in/missing.json",
        Body=json.dumps({"datastoreId": series.datastore_id, "imageSetId": "a" * 32}),
    )
    rt = runtime_client(prebuilt["gateway"].url)
    ok = rt.invoke_endpoint_async(
        EndpointName="spleen-async",
        ContentType="application/json",
        InputLocation=f"s3://{RESULTS_BUCKET}/prebuilt-in/request.json",
    )
    missing = rt.invoke_endpoint_async(
        EndpointName="spleen-async",
        ContentType="application/json",
        InputLocation=f"s3://{RESULTS_BUCKET}/prebuilt-in/missing.json",
    )

    def wait(uri: str) -> dict:
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            except s3.exceptions.NoSuchKey:
                time.sleep(0.5)
        raise TimeoutError(uri)

    out = wait(ok["OutputLocation"])
    assert ok["OutputLocation"].endswith(f"/prebuilt-async/{ok['InferenceId']}.out")
    assert out["results"][0]["report"]["seriesInstanceUid"] == series.series_uid
    seg_uri = out["results"][0]["seg"]["s3Uri"]
    bucket, key = seg_uri.removeprefix("s3://").split("/", 1)
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == out["results"][0]["seg"]["sizeBytes"]
    failure = wait(missing["FailureLocation"])
    assert failure["error"]["httpStatus"] == 404

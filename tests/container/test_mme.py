"""The multi-model container end to end: real ``container/serve`` (MMS + Java) and ``sagemaker-local`` on
127.0.0.1.

One serve (2 workers per model) and one gateway for the whole module; the last test stops serve with SIGTERM
and checks that Java and every Python worker are gone.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import botocore.exceptions
import psutil
import pydicom
import pytest

from devstack.clients import ahi_client, dicomweb_client, s3_client
from devstack.processes import DUMMY_AWS_ENV
from devstack.sagemaker_local.models import ContainerClient, model_key
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
from tests.container.emf_checks import emf_lines, emf_problems

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def stack(moto_s3: str, ahi_local: str, model_store: Path, container_dataset: Dataset, tmp_path_factory):
    env = service_env(moto_s3, ahi_local)
    work = tmp_path_factory.mktemp("mme-work")
    env.update({"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SPLEEN_WORK_DIR": str(work)})
    with serve(env) as container:
        with gateway(
            env,
            container.url,
            str(model_store),
            moto_s3,
            extra=[
                "--async-output",
                f"s3://{RESULTS_BUCKET}/async-out",
                "--async-failure",
                f"s3://{RESULTS_BUCKET}/async-failed",
            ],
        ) as gw:
            yield {
                "container": container,
                "gateway": gw,
                "env": env,
                "work": work,
                "moto": moto_s3,
                "ahi": ahi_local,
                "models": model_store,
                "data": container_dataset,
            }


@pytest.fixture(scope="module")
def extracted_model(model_store: Path, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("extracted")
    with tarfile.open(model_store / "model.tar.gz") as tar:
        tar.extractall(dest, filter="data")
    return dest


def request_body(*series, s3_prefix: str | None = None, inline: bool = False, write_back=None) -> bytes:
    output: dict = {"inlineSeg": inline}
    if s3_prefix:
        output["s3Uri"] = s3_prefix
    if write_back:
        output["writeBackToAHI"] = write_back
    inputs = [{"datastoreId": s.datastore_id, "imageSetId": s.image_set_id} for s in series]
    return json.dumps({"inputs": inputs, "output": output}).encode()


def s3_bytes(moto: str, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return s3_client(moto).get_object(Bucket=bucket, Key=key)["Body"].read()


def check_seg(seg_bytes: bytes, series) -> pydicom.Dataset:
    ds = pydicom.dcmread(io.BytesIO(seg_bytes))
    assert ds.SOPClassUID == SEG_SOP_CLASS
    assert ds.StudyInstanceUID == series.study_uid
    referenced = {item.SeriesInstanceUID for item in ds.ReferencedSeriesSequence}
    assert referenced == {series.series_uid}
    return ds


def status_of_oversized_post(base_url: str, path: str, size: int) -> int:
    """POST ``size`` bytes; the status code (the server may answer and close before the body is sent)."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode())
        try:
            sock.sendall(b"x" * size)
        except OSError:
            pass  # the server refused the body early: its answer is already in the socket
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1])


# --- the MME contract on the container itself (HTTP)
# -------------------------------------------------------------


def test_ping_on_localhost_only(stack):
    status, _, body = http("GET", stack["container"].url + "/ping")
    assert status == 200
    assert read_json(body)["status"] == "Healthy"
    port = int(stack["container"].url.rsplit(":", 1)[1])
    tree = stack["container"].tree()
    (java,) = [p for p in tree if "com.amazonaws.ml.mms.ModelServer" in " ".join(p.cmdline())]
    listening = {
        (c.laddr.ip.removeprefix("::ffff:"), c.laddr.port)
        for c in java.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {("127.0.0.1", port)}  # never 0.0.0.0 / :: on a host


def loaded_name(stack) -> str:
    """The container's name for TargetModel model.tar.gz, loading it through the gateway if needed."""
    runtime_client(stack["gateway"].url).invoke_endpoint(
        EndpointName="spleen",
        TargetModel="model.tar.gz",
        ContentType="application/json",
        Body=request_body(stack["data"].series[0]),
    )
    return model_key("model.tar.gz")


def test_load_list_describe_delete(stack, extracted_model):
    url = stack["container"].url
    name = loaded_name(stack)
    status, _, body = http("GET", url + f"/models/{name}")
    assert status == 200
    described = read_json(body)
    assert described["modelName"] == name
    assert [w["status"] for w in described["workers"]] == [
        "READY",
        "READY",
    ]  # SAGEMAKER_MODEL_SERVER_WORKERS=2
    model_dir = described["modelUrl"]
    status, _, body = http(
        "POST", url + "/models", json.dumps({"model_name": name, "url": model_dir}).encode(), JSON
    )
    assert status == 409
    assert "already registered" in read_json(body)["message"]

    # A second registration without workers (cheap) to page through GET /models one model at a time.
    status, _, _ = http(
        "POST",
        url + "/models",
        json.dumps({"model_name": "zz-paging", "url": str(extracted_model), "initial_workers": 0}).encode(),
        JSON,
    )
    assert status == 200
    status, _, body = http("GET", url + "/models?limit=1")
    page = read_json(body)
    assert status == 200 and len(page["models"]) == 1 and page["nextPageToken"] == "1"
    status, _, body = http("GET", url + f"/models?limit=1&next_page_token={page['nextPageToken']}")
    names = [m["modelName"] for m in page["models"] + read_json(body)["models"]]
    assert names == sorted([name, "zz-paging"])

    status, _, _ = http("DELETE", url + "/models/zz-paging")
    assert status == 200
    status, _, body = http("GET", url + "/models/zz-paging")
    assert status == 404
    assert "Model not found: zz-paging" in read_json(body)["message"]
    assert http("DELETE", url + "/models/zz-paging")[0] == 404
    assert http("POST", url + "/models/zz-paging/invoke", b"{}", JSON)[0] == 404


def test_failed_initialize_fails_the_load(stack, tmp_path):
    """A model dir without a bundle: initialize raises, POST /models is a 500, nothing stays registered."""
    (tmp_path / "not-a-bundle").mkdir()
    (tmp_path / "not-a-bundle" / "README").write_text("no configs/metadata.json here")
    url = stack["container"].url
    status, _, body = http(
        "POST",
        url + "/models",
        json.dumps({"model_name": "broken", "url": str(tmp_path / "not-a-bundle")}).encode(),
        JSON,
    )
    assert status == 500
    assert read_json(body)["message"] == "Failed to start workers"
    status, _, _ = http("GET", url + "/models/broken")
    assert status == 404
    deadline = time.monotonic() + 10  # MMS logs asynchronously
    while "BundleNotFoundError" not in stack["container"].log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "BundleNotFoundError" in stack["container"].log_text()


def test_insufficient_memory_is_507(stack, tmp_path):
    """A model whose files would need more memory than the host has: 507 (the platform evicts and retries)."""
    model_dir = tmp_path / "huge"
    shutil.copytree(
        Path(__file__).resolve().parents[2] / "model" / "spleen_ct_segmentation", model_dir / "bundle"
    )
    with open(model_dir / "bundle" / "models" / "huge.pt", "wb") as fh:  # sparse: no disk used
        fh.truncate(4 * psutil.virtual_memory().total)
    url = stack["container"].url
    status, _, body = http(
        "POST", url + "/models", json.dumps({"model_name": "huge", "url": str(model_dir)}).encode(), JSON
    )
    assert status == 507, body
    # MMS 1.1.11 may keep a 507 model registered without workers, and may register it only after the 507 has
    # gone out (so a DELETE sent at once finds nothing); the caller (the platform, or sagemaker-local, with
    # ContainerClient.unload_until_gone) deletes it until it is gone before retrying.
    assert ContainerClient(url).unload_until_gone("huge", timeout_s=20)
    assert http("GET", url + "/models/huge")[0] == 404
    # MMS abandons a worker of the refused model (re-parented to init); serve reaps such orphans within
    # seconds.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        orphans = [
            p
            for p in psutil.process_iter(["cmdline", "ppid"])
            if p.info["ppid"] == 1 and any(str(model_dir) in a for a in (p.info["cmdline"] or []))
        ]
        if not orphans:
            break
        time.sleep(0.5)
    assert orphans == []


def test_request_larger_than_limit_is_413_and_bad_json_400(stack):
    url = stack["container"].url
    name = loaded_name(stack)
    assert status_of_oversized_post(url, f"/models/{name}/invoke", 7_000_000) == 413
    status, _, body = http("POST", url + f"/models/{name}/invoke", b"{not json", JSON)
    assert status == 400
    error = read_json(body)["error"]
    assert error["type"] == "PayloadError"
    assert "not valid JSON" in error["message"]
    assert http("GET", url + "/ping")[0] == 200  # the server is still fine


# --- through the gateway with boto3
# ------------------------------------------------------------------------------


def test_invoke_endpoint_writes_seg_to_s3_and_inline(stack):
    series = stack["data"].series[0]
    rt = runtime_client(stack["gateway"].url)
    resp = rt.invoke_endpoint(
        EndpointName="spleen",
        TargetModel="model.tar.gz",
        ContentType="application/json",
        Body=request_body(series, s3_prefix=f"s3://{RESULTS_BUCKET}/results", inline=True),
        CustomAttributes="trace-id=abc",
    )
    assert resp["ContentType"] == "application/json"
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    assert "trace-id=abc" in resp["CustomAttributes"]
    out = json.loads(resp["Body"].read())
    assert resp["CustomAttributes"].startswith(f"request-id={out['requestId']}")
    (result,) = out["results"]
    assert result["status"] == "succeeded"
    seg = result["seg"]
    prefix = f"s3://{RESULTS_BUCKET}/results/{out['requestId']}/00-{series.image_set_id}/"
    assert seg["s3Uri"] == prefix + "seg.dcm"
    stored = s3_bytes(stack["moto"], seg["s3Uri"])
    assert base64.b64decode(seg["base64"]) == stored
    assert seg["sizeBytes"] == len(stored)
    check_seg(stored, series)
    report = json.loads(s3_bytes(stack["moto"], result["reportS3Uri"]))
    assert report["seriesInstanceUid"] == series.series_uid
    assert report["imageSetIds"] == [series.image_set_id]
    assert report["sliceCount"] == series.slices
    assert report["seg"]["path"] == seg["s3Uri"]
    assert result["spleenVolumeMl"] == report["spleen"]["volumeMl"]
    assert s3_bytes(stack["moto"], result["stlS3Uri"])[:5] != b""
    assert result["previewS3Uri"] == prefix + "preview.png" == report["previewPath"]
    assert s3_bytes(stack["moto"], result["previewS3Uri"])[:8] == b"\x89PNG\r\n\x1a\n"
    # The input's CloudWatch EMF line reaches the container's stdout unprefixed (MMS's log4j passes it on).
    (emf,) = wait_for_emf(stack["container"], out["requestId"])
    assert emf_problems(emf) == []
    assert (emf["Outcome"], emf["InputsFailed"], emf["FramesFetched"]) == ("succeeded", 0, series.slices)
    assert emf["SpleenVolumeMl"] == result["spleenVolumeMl"]
    assert list(stack["work"].iterdir()) == []  # per-request working directories are removed


def wait_for_emf(container, request_id: str, timeout_s: float = 30.0) -> list[dict]:
    """The EMF lines of one request in the container's log (MMS writes worker output asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        docs = [d for d in emf_lines(container.log_text()) if d.get("RequestId") == request_id]
        if docs or time.monotonic() > deadline:
            return docs
        time.sleep(0.2)


def test_eight_concurrent_invocations_each_get_their_own_result(stack):
    rt = runtime_client(stack["gateway"].url)
    series_list = stack["data"].series

    def call(series):
        resp = rt.invoke_endpoint(
            EndpointName="spleen",
            TargetModel="model.tar.gz",
            ContentType="application/json",
            Body=request_body(series, s3_prefix=f"s3://{RESULTS_BUCKET}/concurrent"),
        )
        return series, json.loads(resp["Body"].read())

    with ThreadPoolExecutor(max_workers=len(series_list)) as pool:
        outcomes = list(pool.map(call, series_list))
    assert len({out["requestId"] for _, out in outcomes}) == len(series_list)
    for series, out in outcomes:
        (result,) = out["results"]
        assert result["status"] == "succeeded", result
        assert result["report"]["seriesInstanceUid"] == series.series_uid
        assert result["report"]["sliceCount"] == series.slices
        assert result["seg"]["s3Uri"].endswith(f"{out['requestId']}/00-{series.image_set_id}/seg.dcm")
        check_seg(s3_bytes(stack["moto"], result["seg"]["s3Uri"]), series)
    assert list(stack["work"].iterdir()) == []


def test_multiple_inputs_in_one_request(stack):
    a, b = stack["data"].series[1], stack["data"].series[2]
    resp = runtime_client(stack["gateway"].url).invoke_endpoint(
        EndpointName="spleen",
        TargetModel="model.tar.gz",
        ContentType="application/json",
        Body=request_body(a, b),
    )
    out = json.loads(resp["Body"].read())
    assert [r["report"]["seriesInstanceUid"] for r in out["results"]] == [a.series_uid, b.series_uid]
    assert [r["index"] for r in out["results"]] == [0, 1]
    assert all(r["seg"]["s3Uri"] is None for r in out["results"])  # no output prefix given: nothing stored
    assert "base64" not in out["results"][0]["seg"]


def test_invoke_without_content_type(stack):
    series = stack["data"].series[3]
    resp = runtime_client(stack["gateway"].url).invoke_endpoint(
        EndpointName="spleen", TargetModel="model.tar.gz", Body=request_body(series)
    )
    assert json.loads(resp["Body"].read())["results"][0]["report"]["seriesInstanceUid"] == series.series_uid


def test_study_request_selects_the_ct_series(stack):
    series = stack["data"].series[2]
    body = json.dumps(
        {"inputs": [{"datastoreId": series.datastore_id, "studyInstanceUid": series.study_uid}]}
    )
    resp = runtime_client(stack["gateway"].url).invoke_endpoint(
        EndpointName="spleen", TargetModel="model.tar.gz", ContentType="application/json", Body=body
    )
    (result,) = json.loads(resp["Body"].read())["results"]
    assert result["report"]["seriesInstanceUid"] == series.series_uid
    assert result["report"]["imageSetIds"] == [series.image_set_id]


def test_bad_payload_is_a_400_model_error(stack):
    rt = runtime_client(stack["gateway"].url)
    body = json.dumps({"inputs": [{"datastoreId": "short", "imageSetId": "x"}]})
    with pytest.raises(rt.exceptions.ModelError, match=r"Received client error \(400\)") as info:
        rt.invoke_endpoint(
            EndpointName="spleen", TargetModel="model.tar.gz", ContentType="application/json", Body=body
        )
    err = info.value.response
    assert err["OriginalStatusCode"] == 400
    original = json.loads(err["OriginalMessage"])
    assert original["error"]["type"] == "PayloadError"
    assert "inputs[0]" in original["error"]["message"] and "datastoreId" in original["error"]["message"]


def test_unknown_image_set_is_a_404_with_the_ids(stack):
    ds = stack["data"].datastore_id
    body = json.dumps({"inputs": [{"datastoreId": ds, "imageSetId": "0" * 32}]})
    rt = runtime_client(stack["gateway"].url)
    with pytest.raises(rt.exceptions.ModelError, match=r"\(404\)") as info:
        rt.invoke_endpoint(
            EndpointName="spleen", TargetModel="model.tar.gz", ContentType="application/json", Body=body
        )
    original = json.loads(info.value.response["OriginalMessage"])
    assert original["results"][0]["status"] == "failed"
    assert "0" * 32 in original["error"]["message"]
    # The worker survived: a good request right after still works.
    good = stack["data"].series[3]
    resp = rt.invoke_endpoint(
        EndpointName="spleen",
        TargetModel="model.tar.gz",
        ContentType="application/json",
        Body=request_body(good),
    )
    assert json.loads(resp["Body"].read())["results"][0]["status"] == "succeeded"


def test_gateway_validation_errors(stack):
    rt = runtime_client(stack["gateway"].url)
    series = stack["data"].series[0]
    with pytest.raises(botocore.exceptions.ClientError, match="TargetModel is required") as info:
        rt.invoke_endpoint(EndpointName="spleen", ContentType="application/json", Body=request_body(series))
    assert info.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(botocore.exceptions.ClientError, match="Failed to download model data") as info:
        rt.invoke_endpoint(EndpointName="spleen", TargetModel="missing.tar.gz", Body=request_body(series))
    assert info.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(botocore.exceptions.ClientError, match="must be a relative path"):
        rt.invoke_endpoint(EndpointName="spleen", TargetModel="../etc/passwd", Body=request_body(series))
    with pytest.raises(botocore.exceptions.ClientError, match="limited to 6291456 bytes"):
        rt.invoke_endpoint(
            EndpointName="spleen", TargetModel="model.tar.gz", Body=b"x" * (6 * 1024 * 1024 + 1)
        )


def test_gateway_loads_each_target_once_and_reloads_after_unload(stack):
    url = stack["container"].url
    name = model_key("model.tar.gz")
    status, _, body = http("GET", url + f"/models/{name}")
    assert status == 200  # loaded by the earlier invocations, under the hash of the target name
    assert http("DELETE", url + f"/models/{name}")[0] == 200
    rt = runtime_client(stack["gateway"].url)
    resp = rt.invoke_endpoint(
        EndpointName="spleen",
        TargetModel="model.tar.gz",
        ContentType="application/json",
        Body=request_body(stack["data"].series[4]),
    )
    assert json.loads(resp["Body"].read())["results"][0]["status"] == "succeeded"
    assert http("GET", url + f"/models/{name}")[0] == 200


def test_model_from_s3(stack):
    """ModelDataUrl on S3 (moto): a second gateway fetches the archive from there."""
    s3 = s3_client(stack["moto"])
    s3.upload_file(str(stack["models"] / "model.tar.gz"), RESULTS_BUCKET, "models/v1/model.tar.gz")
    with gateway(
        stack["env"], stack["container"].url, f"s3://{RESULTS_BUCKET}/models/v1", stack["moto"]
    ) as gw:
        rt = runtime_client(gw.url)
        resp = rt.invoke_endpoint(
            EndpointName="spleen",
            TargetModel="model.tar.gz",
            ContentType="application/json",
            Body=request_body(stack["data"].series[5]),
        )
        assert json.loads(resp["Body"].read())["results"][0]["status"] == "succeeded"
        with pytest.raises(botocore.exceptions.ClientError, match="key: models/v1/nope.tar.gz"):
            rt.invoke_endpoint(EndpointName="spleen", TargetModel="nope.tar.gz", Body=b"{}")


def _wait_s3(moto: str, uri: str, timeout_s: float = 300) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return s3_bytes(moto, uri)
        except s3_client(moto).exceptions.NoSuchKey:
            time.sleep(0.5)
    raise TimeoutError(f"{uri} not written within {timeout_s} s")


def test_invoke_endpoint_async(stack):
    s3 = s3_client(stack["moto"])
    series = stack["data"].series[6]
    s3.put_object(
        Bucket=RESULTS_BUCKET,
        Key="async-in/good.json",
        Body=json.dumps({"datastoreId": series.datastore_id, "imageSetId": series.image_set_id}),
    )
    s3.put_object(Bucket=RESULTS_BUCKET, Key="async-in/bad.json", Body=b'{"datastoreId": 1}')
    rt = runtime_client(stack["gateway"].url)
    good = rt.invoke_endpoint_async(
        EndpointName="spleen",
        InputLocation=f"s3://{RESULTS_BUCKET}/async-in/good.json",
        ContentType="application/json",
    )
    bad = rt.invoke_endpoint_async(
        EndpointName="spleen",
        InputLocation=f"s3://{RESULTS_BUCKET}/async-in/bad.json",
        ContentType="application/json",
        InferenceId="bad-one",
    )
    assert good["OutputLocation"] == f"s3://{RESULTS_BUCKET}/async-out/{good['InferenceId']}.out"
    assert bad["InferenceId"] == "bad-one"
    assert bad["FailureLocation"] == f"s3://{RESULTS_BUCKET}/async-failed/bad-one-error.out"
    out = json.loads(_wait_s3(stack["moto"], good["OutputLocation"]))
    assert out["results"][0]["report"]["seriesInstanceUid"] == series.series_uid
    failure = json.loads(_wait_s3(stack["moto"], bad["FailureLocation"]))
    assert failure["error"]["httpStatus"] == 400
    # The sagemaker-runtime model's pattern for InputLocation rejects it, in SageMaker's words.
    with pytest.raises(botocore.exceptions.ClientError, match="at 'InputLocation' failed to satisfy"):
        rt.invoke_endpoint_async(EndpointName="spleen", InputLocation="/local/file.json")


def test_deploy_cli_invoke_against_the_local_gateway(stack, monkeypatch, capsys, tmp_path):
    """``ahi-spleen invoke`` (scripts/aws) end to end through sagemaker-local: real-time with TargetModel,
    then async (request object uploaded to S3, output object polled)."""
    from scripts.aws.cli import main as aws_cli

    for key, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    series = stack["data"].series[5]
    common = [
        "invoke",
        "--sagemaker-runtime-endpoint-url", stack["gateway"].url,
        "--s3-endpoint-url", stack["moto"],
        "--state-file", str(tmp_path / "state.json"),
        "--no-progress",
        "--endpoint-name", "spleen",
        "--datastore-id", series.datastore_id, "--image-set-id", series.image_set_id,
    ]  # fmt: skip
    assert aws_cli([*common, "--target-model", "model.tar.gz"]) == 0
    realtime = json.loads(capsys.readouterr().out)
    assert realtime["results"][0]["report"]["seriesInstanceUid"] == series.series_uid

    assert aws_cli([*common, "--async", "--bucket", RESULTS_BUCKET, "--poll-interval", "0.5"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    assert result["results"][0]["report"]["seriesInstanceUid"] == series.series_uid
    assert result["results"][0]["spleenVolumeMl"] == realtime["results"][0]["spleenVolumeMl"]


def test_write_back_to_ahi(stack):
    series = stack["data"].series[7]
    write_back = {
        "method": "import-job",
        "dataAccessRoleArn": "arn:aws:iam::123456789012:role/ahi-import",
        "wait": True,
    }
    resp = runtime_client(stack["gateway"].url).invoke_endpoint(
        EndpointName="spleen",
        TargetModel="model.tar.gz",
        ContentType="application/json",
        Body=request_body(series, s3_prefix=f"s3://{RESULTS_BUCKET}/wb", write_back=write_back),
    )
    result = json.loads(resp["Body"].read())["results"][0]
    wb = result["writeBackToAHI"]
    assert wb["jobStatus"] == "COMPLETED", wb
    assert wb["datastoreId"] == series.datastore_id
    (new_id,) = wb["imageSetIds"]
    assert new_id != series.image_set_id
    import gzip

    meta = json.loads(
        gzip.decompress(
            ahi_client(stack["ahi"])
            .get_image_set_metadata(datastoreId=series.datastore_id, imageSetId=new_id)[
                "imageSetMetadataBlob"
            ]
            .read()
        )
    )
    seg = pydicom.dcmread(io.BytesIO(s3_bytes(stack["moto"], result["seg"]["s3Uri"])))
    assert seg.SeriesInstanceUID in meta["Study"]["Series"]
    assert meta["Study"]["DICOM"]["StudyInstanceUID"] == series.study_uid


def test_write_back_with_stow_rs(stack):
    """The default write-back: StoreDICOM, synchronous, no S3 staging; the new image set is in the answer and
    the SEG is found again by QIDO-RS and by the native API."""
    series = stack["data"].series[7]
    resp = runtime_client(stack["gateway"].url).invoke_endpoint(
        EndpointName="spleen",
        TargetModel="model.tar.gz",
        ContentType="application/json",
        Body=request_body(series, inline=True, write_back={"method": "stow-rs"}),
    )
    result = json.loads(resp["Body"].read())["results"][0]
    wb = result["writeBackToAHI"]
    assert wb["method"] == "stow-rs" and wb["status"] == 200, wb
    (new_id,) = wb["imageSetIds"]
    seg = pydicom.dcmread(io.BytesIO(base64.b64decode(result["seg"]["base64"])))
    assert wb["sopInstanceUid"] == seg.SOPInstanceUID
    found = dicomweb_client(stack["ahi"]).search_series(series.datastore_id, series.study_uid, Modality="SEG")
    assert seg.SeriesInstanceUID in [s["0020000E"]["Value"][0] for s in found]
    summary = ahi_client(stack["ahi"]).get_image_set(datastoreId=series.datastore_id, imageSetId=new_id)
    assert summary["imageSetState"] == "ACTIVE"


def test_sigterm_stops_java_and_every_worker(stack):
    """Last test of the module: SIGTERM stops Java and all Python workers (no orphans), exit code 0."""
    container = stack["container"]
    procs = container.tree()
    assert any("com.amazonaws.ml.mms.ModelServer" in " ".join(p.cmdline()) for p in procs)
    assert sum("model_service_worker" in " ".join(p.cmdline()) for p in procs) >= 2
    container.proc.send_signal(15)
    assert container.proc.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(procs, timeout=15)
    assert alive == [], [(p.pid, p.cmdline()) for p in alive]
    assert "serve stopped (exit code 0)" in container.log_text()
    assert os.environ.get("SAGEMAKER_MULTI_MODEL") is None  # the tests never leak serve's env into pytest

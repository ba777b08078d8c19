"""Beyond one request, offline: the Lambda trigger, the async back-fill and Batch Transform against the local
stack.

    synthesised AHI events ─▶ trigger.handler ─┐
    ahi-spleen batch (async) ──────────────────┼─▶ sagemaker-local (async) ─▶ container/serve (single model)
    ahi-spleen batch --transform ─▶ moto job ─▶ sagemaker-local transform ─┘        └─▶ ahi-local, moto S3

One single-model ``serve`` for the module; the data: CT series (16-22 slices), an MR series and a 4-slice CT
in one ahi-local datastore. Every check reads what landed in S3 (request objects, async outputs, the transform
output).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import events as ahi_events
from devstack.clients import ahi_client, s3_client
from devstack.importing import create_datastore, ensure_bucket, import_folder
from devstack.processes import DUMMY_AWS_ENV
from devstack.sagemaker_local.transform import TransformRunner
from devstack.synthetic import SeriesSpec, write_series
from scripts.aws import cli
from scripts.aws.session import AwsCliError
from tests.container.conftest import gateway, service_env, single_model_serve
from trigger import handler
from trigger.events import EventError
from trigger.submission import SubmissionError

NAME = "scale"
BUCKET = "scale-requests"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/scale:latest"
WAIT_S = 300.0


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    import os

    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Stack:
    def __init__(self, moto: str, ahi: str, gateway_url: str, container_url: str, datastore: str, root: Path):
        self.moto, self.ahi, self.gateway_url, self.container_url = moto, ahi, gateway_url, container_url
        self.datastore, self.root = datastore, root
        self.series: dict[str, dict[str, Any]] = {}

    def add(self, label: str, spec: SeriesSpec) -> dict[str, Any]:
        written = write_series(self.root / label, spec)
        result = import_folder(ahi_client(self.ahi), s3_client(self.moto), self.datastore, self.root / label)
        assert result.job_status == "COMPLETED" and len(result.image_set_ids) == 1, result.failure
        entry = {"id": result.image_set_ids[0], "job": result.job_id, "series_uid": written.series_uid}
        self.series[label] = entry
        return entry

    def cli(self, *argv: str, expect_code: int = 0) -> dict[str, Any]:
        full = [
            *argv,
            "--name", NAME,
            "--region", "us-east-1",
            "--endpoint-url", self.moto,
            "--ahi-endpoint-url", self.ahi,
            "--sagemaker-runtime-endpoint-url", self.gateway_url,
            "--no-progress",
        ]  # fmt: skip
        code, text = cli.run(full)
        assert code == expect_code, text
        return dict(json.loads(text))

    def keys(self, prefix: str) -> list[str]:
        s3 = s3_client(self.moto)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, uri: str) -> bytes | None:
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        try:
            return s3_client(self.moto).get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception:
            return None

    def wait_for(self, uri: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while (body := self.read(uri)) is None:
            assert time.monotonic() < deadline, f"no result at {uri} after {WAIT_S:.0f} s"
            time.sleep(0.5)
        return dict(json.loads(body))


@pytest.fixture(scope="module")
def stack(
    moto_s3: str, ahi_local: str, model_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("scale")
    with _env(**DUMMY_AWS_ENV):
        ensure_bucket(s3_client(moto_s3), BUCKET)
        datastore = create_datastore(ahi_client(ahi_local), name="scale-tests")
        # the control plane (moto): an async endpoint record the CLI checks before submitting
        plane = Stack(moto_s3, ahi_local, "", "", datastore, root)
        plane.cli("upload-model", "--bucket", BUCKET, "--archive", str(model_store / "model.tar.gz"))
        plane.cli(
            "deploy-async",
            "--bucket",
            BUCKET,
            "--create-roles",
            "--image",
            IMAGE,
            "--instance-type",
            "ml.m5.xlarge",
        )
    env = {**service_env(moto_s3, ahi_local), "SAGEMAKER_MULTI_MODEL": "false"}
    with single_model_serve(moto_s3, ahi_local, model_store, root) as container:
        extra = [
            "--async-output", f"s3://{BUCKET}/{NAME}/async-output/",
            "--async-failure", f"s3://{BUCKET}/{NAME}/async-failure/",
            "--async-container-url", container.url,
        ]  # fmt: skip
        with gateway(
            env, container.url, str(model_store), moto_s3, extra, endpoint_names=[f"{NAME}-async"]
        ) as gw:
            s = Stack(moto_s3, ahi_local, gw.url, container.url, datastore, root)
            s.add("ct-a", SeriesSpec(slices=16, patient_id="SCALE-A", seed=11, study_date="20240110"))
            s.add("ct-b", SeriesSpec(slices=18, patient_id="SCALE-B", seed=12, study_date="20240220"))
            s.add(
                "mr",
                SeriesSpec(slices=16, modality="MR", patient_id="SCALE-M", seed=13, study_date="20240110"),
            )
            s.add("short", SeriesSpec(slices=4, patient_id="SCALE-S", seed=14, study_date="20240110"))
            with _env(**DUMMY_AWS_ENV):
                yield s


def _lambda_env(stack: Stack) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL_S3": stack.moto,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": stack.gateway_url,
        "AWS_ENDPOINT_URL_MEDICAL_IMAGING": stack.ahi,
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        "ENDPOINT_NAME": f"{NAME}-async",
        "REQUEST_BUCKET": BUCKET,
        "REQUEST_PREFIX": f"{NAME}/requests/",
    }


def test_trigger_handler_submits_each_ct_image_set_version_once(stack: Stack) -> None:
    ahi = ahi_client(stack.ahi)
    a, b, mr, short = (stack.series[k] for k in ("ct-a", "ct-b", "mr", "short"))
    created_a = ahi_events.image_set_created(stack.datastore, a["id"])
    with _env(**_lambda_env(stack)):
        first = handler.lambda_handler(created_a)
        retried = handler.lambda_handler(created_a)  # Lambda's retry of the same event
        redelivered = handler.lambda_handler(ahi_events.image_set_created(stack.datastore, a["id"]))
        not_ct = handler.lambda_handler(ahi_events.image_set_created(stack.datastore, mr["id"]))
        too_short = handler.lambda_handler(ahi_events.image_set_created(stack.datastore, short["id"]))
        job = handler.lambda_handler(ahi_events.import_job_completed(ahi, stack.datastore, b["job"]))
        with pytest.raises(EventError, match=r"detail-type 'Data Store Created' is not handled"):
            handler.lambda_handler(
                ahi_events.envelope("Data Store Created", {"datastoreId": stack.datastore})
            )

    (submitted,) = first["outcomes"]
    assert submitted["status"] == "submitted" and submitted["inference_id"] == f"{a['id']}-v1"
    assert [o["status"] for o in retried["outcomes"] + redelivered["outcomes"]] == ["duplicate", "duplicate"]
    assert redelivered["outcomes"][0]["output_location"] == submitted["output_location"]
    assert (
        not_ct["outcomes"][0]["status"] == "skipped"
        and "(MR, 16 instances)" in not_ct["outcomes"][0]["reason"]
    )
    assert (
        too_short["outcomes"][0]["status"] == "skipped"
        and "at least 16" in too_short["outcomes"][0]["reason"]
    )
    (from_job,) = job["outcomes"]
    assert (from_job["status"], from_job["image_set_id"]) == ("submitted", b["id"])

    requests = [k for k in stack.keys(f"{NAME}/requests/") if not k.endswith(".submitted.json")]
    assert requests == sorted(f"{NAME}/requests/{stack.datastore}/{s['id']}/v1.json" for s in (a, b))
    for outcome, series in ((submitted, a), (from_job, b)):
        report = stack.wait_for(outcome["output_location"])["results"][0]
        assert report["status"] == "succeeded"
        assert report["report"]["seriesInstanceUid"] == series["series_uid"]


def test_trigger_handler_without_endpoint_raises_so_lambda_retries_then_dead_letters(stack: Stack) -> None:
    event = ahi_events.image_set_created(stack.datastore, stack.series["ct-b"]["id"])
    stack.series["ct-late"] = stack.add("ct-late", SeriesSpec(slices=16, patient_id="SCALE-L", seed=15))
    late = ahi_events.image_set_created(stack.datastore, stack.series["ct-late"]["id"])
    with _env(**{**_lambda_env(stack), "ENDPOINT_NAME": "no-such-endpoint"}):
        assert handler.lambda_handler(event)["outcomes"][0]["status"] == "duplicate"  # marker found first
        with pytest.raises(SubmissionError, match=r"endpoint no-such-endpoint not found.*deploy-async"):
            handler.lambda_handler(late)
        # an event about a datastore / image set this account does not have: skipped with the reason, no claim
        foreign = handler.lambda_handler(ahi_events.image_set_created("0" * 32, "1" * 32))
    (skipped,) = foreign["outcomes"]
    assert skipped["status"] == "skipped" and skipped["reason"].startswith("not found"), skipped
    assert stack.keys(f"{NAME}/requests/{'0' * 32}/") == []
    # nothing claimed: the version is free for the retry (or the back-fill)
    late_id = stack.series["ct-late"]["id"]
    assert not [k for k in stack.keys(f"{NAME}/requests/{stack.datastore}/{late_id}/")]


def test_batch_backfills_the_rest_once_and_a_rerun_changes_nothing(stack: Stack, tmp_path: Path) -> None:
    journal = str(tmp_path / "journal.jsonl")
    args = ("batch", "--datastore-id", stack.datastore, "--bucket", BUCKET, "--journal", journal,
            "--poll-interval", "1", "--concurrency", "2")  # fmt: skip
    ids = {k: s["id"] for k, s in stack.series.items()}
    planned = stack.cli(*args, "--dry-run")
    assert planned["would_call"] == [] and not Path(journal).exists()
    statuses = {i["image_set_id"]: i["status"] for i in planned["result"]["items"]}
    assert statuses[ids["ct-late"]] == "would-submit" and statuses[ids["ct-a"]] == "duplicate"

    out = stack.cli(*args)["result"]
    by_id = {item["image_set_id"]: item for item in out["items"]}
    assert out["counts"] == {"succeeded": 3, "skipped": 2}, out["items"]
    for label in ("ct-a", "ct-b", "ct-late"):
        assert by_id[ids[label]]["status"] == "succeeded" and by_id[ids[label]]["spleenVolumeMl"] is not None
    assert "no CT series" in by_id[ids["mr"]]["reason"]
    outputs = stack.keys(f"{NAME}/async-output/")
    assert len(outputs) == 3  # ct-a and ct-b were the trigger's: collected, not inferred again

    again = stack.cli(*args)
    assert again["result"]["counts"] == out["counts"] and again["changes"] == []
    assert stack.keys(f"{NAME}/async-output/") == outputs

    not_ct = tmp_path / "not-ct.txt"
    not_ct.write_text(f"{ids['mr']}\n{ids['short']}\n")
    journal2 = str(tmp_path / "j2.jsonl")
    none = stack.cli(
        "batch",
        "--datastore-id",
        stack.datastore,
        "--bucket",
        BUCKET,
        "--ids-file",
        str(not_ct),
        "--journal",
        journal2,
    )["result"]
    assert none["counts"] == {"skipped": 2} and stack.keys(f"{NAME}/async-output/") == outputs

    no_match = (
        "batch",
        "--datastore-id",
        stack.datastore,
        "--bucket",
        BUCKET,
        "--study-date-from",
        "20990101",
    )
    with pytest.raises(AwsCliError, match=r"no image sets match datastore .* study dates 20990101"):
        stack.cli(*no_match)
    with pytest.raises(AwsCliError, match=r"datastore f{32} not found"):
        stack.cli("batch", "--datastore-id", "f" * 32, "--bucket", BUCKET)


def test_transform_route_runs_the_manifest_through_invocations(stack: Stack, tmp_path: Path) -> None:
    d = stack.add("ct-d", SeriesSpec(slices=20, patient_id="SCALE-D", seed=16))
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(f"# back-fill list\n{d['id']}\n{stack.series['mr']['id']}\n")
    args = ("batch", "--transform", "--datastore-id", stack.datastore, "--bucket", BUCKET,
            "--ids-file", str(ids_file),
            "--image", IMAGE, "--instance-type", "ml.m5.xlarge", "--max-concurrent", "2")  # fmt: skip
    first = stack.cli(*args, "--no-wait")
    job_name = first["result"]["transformJob"]
    assert any(c.startswith("sagemaker.create_transform_job(") for c in first["changes"])
    import boto3

    sm = boto3.client("sagemaker", endpoint_url=stack.moto, region_name="us-east-1")
    job = sm.describe_transform_job(TransformJobName=job_name)
    assert job["TransformInput"]["SplitType"] == "Line" and job["BatchStrategy"] == "SingleRecord"
    manifest = stack.read(job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"])
    assert manifest is not None and [json.loads(line) for line in manifest.decode().splitlines()] == [
        {"inputs": [{"datastoreId": stack.datastore, "imageSetId": d["id"]}]}
    ]

    result = TransformRunner(job, stack.container_url, s3_client(stack.moto)).run()
    assert result.status == "Completed", result.failure_reason
    assert result.records == 1 and len(result.outputs) == 1

    again = stack.cli(*args)
    assert again["changes"] == [] and again["result"]["transformJob"] == job_name
    items = {i["image_set_id"]: i for i in again["result"]["items"]}
    assert items[d["id"]]["status"] == "succeeded" and items[d["id"]]["spleenVolumeMl"] is not None
    assert items[stack.series["mr"]["id"]]["status"] == "skipped"


class _Throttling:
    """A sagemaker-runtime endpoint that answers every call with ThrottlingException (400), as AWS does when a
    caller exceeds its rate; counts the calls."""

    def __init__(self) -> None:
        import http.server
        import threading

        outer = self
        self.calls = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                outer.calls += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"message": "Rate exceeded"}).encode()
                self.send_response(400)
                self.send_header("X-Amzn-ErrorType", "ThrottlingException")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_throttled_submissions_are_journaled_and_resubmitted_by_a_rerun(stack: Stack, tmp_path: Path) -> None:
    from scripts.aws import batch
    from scripts.aws.names import Names
    from scripts.aws.session import Aws, AwsSettings
    from scripts.aws.state import State

    t = stack.add("ct-t", SeriesSpec(slices=16, patient_id="SCALE-T", seed=17))
    selection = batch.Selection(stack.datastore, image_set_ids=(t["id"],))
    journal = tmp_path / "journal.jsonl"
    names, state = Names(NAME), State(tmp_path / "state.json")
    throttling = _Throttling()
    try:
        endpoints = {"medical-imaging": stack.ahi, "sagemaker-runtime": throttling.url}
        aws = Aws(AwsSettings("us-east-1", endpoint_url=stack.moto, service_endpoints=endpoints,
                              max_attempts=2,
                              progress=False))  # fmt: skip
        settings = batch.AsyncSettings(f"{NAME}-async", concurrency=2, poll_interval_s=1)
        report = batch.run_async(aws, names, selection, BUCKET, settings, journal, state)
    finally:
        throttling.close()
    (item,) = report.items
    assert item["status"] == "submit-failed" and "ThrottlingException" in item["reason"], item
    assert report.exit_code == 1 and throttling.calls >= 2  # botocore retried, then the journal took it
    assert stack.keys(f"{NAME}/requests/{stack.datastore}/{t['id']}/") == []  # claim released: nothing lost

    endpoints["sagemaker-runtime"] = stack.gateway_url
    aws = Aws(AwsSettings("us-east-1", endpoint_url=stack.moto, service_endpoints=endpoints, progress=False))
    report = batch.run_async(aws, names, selection, BUCKET, settings, journal, state)
    (item,) = report.items
    assert item["status"] == "succeeded" and report.exit_code == 0, item
    lines = [json.loads(line)["status"] for line in journal.read_text().splitlines()]
    assert lines == ["submit-failed", "submitted", "succeeded"]


def test_batch_against_a_missing_endpoint_submits_nothing(stack: Stack) -> None:
    before = stack.keys(f"{NAME}/requests/")
    with pytest.raises(
        AwsCliError, match=r"async endpoint nope does not exist.*deploy-async.*nothing was submitted"
    ):
        stack.cli("batch", "--datastore-id", stack.datastore, "--bucket", BUCKET, "--endpoint-name", "nope")
    assert stack.keys(f"{NAME}/requests/") == before


def test_transform_emulator_fails_the_job_on_a_bad_record_and_refuses_what_it_does_not_emulate(
    stack: Stack,
) -> None:
    s3 = s3_client(stack.moto)
    good = {"inputs": [{"datastoreId": stack.datastore, "imageSetId": stack.series["mr"]["id"]}]}
    unknown = {"inputs": [{"datastoreId": stack.datastore, "imageSetId": "f" * 32}]}
    lines = "\n".join(json.dumps(x) for x in (good, unknown)) + "\n"
    s3.put_object(Bucket=BUCKET, Key="emulator/in/bad.jsonl", Body=lines.encode())
    job = {
        "TransformJobName": "bad-record",
        "MaxConcurrentTransforms": 2,
        "ModelClientConfig": {"InvocationsMaxRetries": 0},
        "BatchStrategy": "SingleRecord",
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/emulator/in/"}
            },
            "ContentType": "application/json",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": f"s3://{BUCKET}/emulator/out/", "AssembleWith": "Line"},
    }
    result = TransformRunner(job, stack.container_url, s3).run()
    assert result.status == "Failed" and result.outputs == []
    assert "emulator/in/bad.jsonl line 1: container answered 422" in str(result.failure_reason)  # the MR line
    assert stack.keys("emulator/out/") == []
    for change, message in (
        ({"BatchStrategy": "MultiRecord"}, "BatchStrategy 'MultiRecord' is not emulated"),
        ({"DataProcessing": {"JoinSource": "Input"}}, "DataProcessing"),
    ):
        with pytest.raises(ValueError, match=message):
            TransformRunner({**job, **change}, stack.container_url, s3)
    empty = {**job, "TransformInput": {**job["TransformInput"], "DataSource": {
        "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/emulator/none/"}}}}  # fmt: skip
    assert "no S3 objects found" in str(TransformRunner(empty, stack.container_url, s3).run().failure_reason)

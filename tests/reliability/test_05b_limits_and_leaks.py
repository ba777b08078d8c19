"""Large error responses, echoed values, nesting, payload and archive limits, and what failed requests leave
behind, through the running stack (boto3 → sagemaker-local → container/serve).

* Error bodies of any size reach the caller whole (multi-model-server resets the connection after an error
  response: the gateway reads with a large receive window, the container keeps error bodies under 1 MiB);
  echoed values are bounded to 200 characters.
* A missing output bucket is a 400 naming the bucket, with the segmentation kept in the response.
* JSON nested deeper than 32 levels is a 400 with the reason at every door.
* The gateway refuses a body over 6 MB from its Content-Length, before reading it; TargetModel spellings
  name one model; a link out of the model folder is refused; an archive that unpacks past the limit is
  refused before anything is written.
* Unknown targets, rejected archives and refused loads leave no folder; the default models folder goes away
  when the gateway stops; the management API never lists a host folder.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tarfile
import time
from pathlib import Path

import pytest

from tests.container.conftest import http, runtime_client
from tests.reliability.conftest import JSON, TARGET, Service, Stack, _gateway_argv, original

PADDED = 1_000_000


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _models_dir(stack: Stack) -> Path:
    argv = stack.gateway.argv(stack.gateway.port)
    return Path(argv[argv.index("--models-dir") + 1])


# --- 1. large error responses, bounded echoes
# --------------------------------------------------------------------------------------
def test_padded_id_is_echoed_bounded_and_every_answer_arrives(stack: Stack) -> None:
    body = json.dumps({"inputs": [{"datastoreId": stack.datastore_id, "imageSetId": "a" * PADDED}]}).encode()
    for _ in range(2):  # an unbounded 1 MB echo was reset by MMS in most tries
        response, _ = stack.invoke_error(body)
        error = original(response)["error"]
        assert error["type"] == "PayloadError"
        assert "'imageSetId' must be an AWS HealthImaging ID" in error["message"]
        assert len(error["message"]) < 600, len(error["message"])
    # The same at the container's own door, and for a padded unknown field name.
    padded_key = json.dumps({"inputs": [stack.cases["good0"].request()], "x" * PADDED: 1}).encode()
    status, _, raw = http(
        "POST", f"{stack.container.url}/models/{stack.model_name()}/invoke", padded_key, JSON
    )
    assert status == 400 and len(raw) < 2000, (status, len(raw))
    assert "unknown top-level field(s)" in json.loads(raw)["error"]["message"]


def test_large_error_body_with_four_segmentations_arrives_whole(stack: Stack) -> None:
    """4 good CT image sets + 1 without CT, SEGs inline: a 422 whose body carries all four results."""
    names = ["good0", "good1", "good2", "good3", "mr_only"]
    body = json.dumps(
        {"inputs": [stack.cases[n].request() for n in names], "output": {"inlineSeg": True}}
    ).encode()
    response, _ = stack.invoke_error(body)
    assert response["OriginalStatusCode"] == 422, response["Error"]
    out = original(response)
    statuses = [r["status"] for r in out["results"]]
    assert statuses == ["succeeded"] * 4 + ["failed"], statuses
    for result in out["results"][:4]:
        seg = result["seg"]
        assert "base64" in seg or Path(seg["keptAt"]).is_file(), seg


# --- 4. output bucket missing
# --------------------------------------------------------------------------------------------------
def test_missing_output_bucket_names_it_and_keeps_the_result(stack: Stack) -> None:
    case = stack.cases["good0"]
    response, _ = stack.invoke_error(case.body(s3Uri="s3://no-such-bucket-rel14/out"))
    assert response["OriginalStatusCode"] == 400, response["Error"]
    out = original(response)
    error = out["error"]
    assert error["type"] == "OutputWriteError", error
    assert "no-such-bucket-rel14" in error["message"] and "NoSuchBucket" in error["message"], error
    result = out["results"][0]
    assert result["status"] == "failed"
    assert result["report"]["seriesInstanceUid"] == case.series_uid
    assert result["spleenVolumeMl"] > 0
    assert len(result["seg"]["base64"]) > 1000  # the SEG itself, inline


# --- 5. deeply nested JSON
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"inputs": [' + b"[" * 5000 + b"]" * 5000 + b"]}"])
def test_deeply_nested_json_is_a_400_with_the_reason(stack: Stack, body: bytes) -> None:
    response, _ = stack.invoke_error(body)
    error = original(response)["error"]
    assert response["OriginalStatusCode"] == 400 and error["type"] == "PayloadError", error
    assert "deeper than 32 levels" in error["message"], error
    status, _, raw = http("POST", f"{stack.container.url}/models/{stack.model_name()}/invoke", body, JSON)
    assert status == 400 and b"deeper than 32 levels" in raw, raw[:300]
    assert "RecursionError" not in stack.container.log_text()


# --- 8. limits
# ----------------------------------------------------------------------------------------------------
def test_gateway_refuses_an_oversized_body_before_reading_it(stack: Stack) -> None:
    """Content-Length says 64 MiB but only 1 KiB is sent: the 413 comes at once (nothing waits for the
    rest, nothing is buffered)."""
    with socket.create_connection(("127.0.0.1", stack.gateway.port), timeout=15) as sock:
        head = (
            f"POST /endpoints/spleen/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nX-Amzn-SageMaker-Target-Model: {TARGET}\r\n"
            f"Content-Length: {64 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * 1024)
        reply = b""
        while chunk := sock.recv(65536):  # the gateway answers, then closes (the body was never read)
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"limited to 6291456 bytes" in reply and b"InvokeEndpointAsync" in reply, reply


def test_target_model_spellings_load_one_model(stack: Stack) -> None:
    for target in ("./model.tar.gz", "model.tar.gz", ".//model.tar.gz"):
        response, _ = stack.invoke_error(b"{}", target=target)
        assert response["OriginalStatusCode"] == 400, response["Error"]
    status, _, raw = http("GET", f"{stack.gateway.url}/_local/health")
    loaded = json.loads(raw)["loadedModels"]
    assert "model.tar.gz" in loaded and not [t for t in loaded if t.endswith("/model.tar.gz")], loaded
    status, _, raw = http("GET", f"{stack.container.url}/models")
    names = [m["modelName"] for m in json.loads(raw)["models"]]
    assert len(names) == len(set(names)) and len(names) <= len(loaded), names


def test_link_out_of_the_model_folder_is_refused(stack: Stack, tmp_path: Path) -> None:
    outside = tmp_path / "outside.tar.gz"
    shutil.copyfile(stack.models / TARGET, outside)
    link = stack.models / "linked-out.tar.gz"
    link.symlink_to(outside)
    try:
        response, _ = stack.invoke_error(stack.cases["good0"].body(), target=link.name)
    finally:
        link.unlink()
    assert response["Error"]["Code"] == "ValidationError", response["Error"]
    assert "symbolic link out of the model source" in response["Error"]["Message"]


def _bomb(path: Path, size: int) -> None:
    """A model archive with the real bundle plus one file of ``size`` zero bytes (compresses ~1000:1)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("spleen_ct_segmentation/padding.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))


def test_refused_archives_and_failed_loads_leave_nothing(stack: Stack, tmp_path: Path) -> None:
    """A separate gateway (default temporary models folder, --max-model-size-mb 64, failed-load folders
    removed after 1 s): a 200 MiB bomb is refused before anything is extracted, a load the container refuses
    leaves no folder, and the temporary folder is gone once the gateway stops."""
    source = tmp_path / "source"
    source.mkdir()
    _bomb(source / "bomb.tar.gz", 200 * 1024 * 1024)
    assert (source / "bomb.tar.gz").stat().st_size < 2 * 1024 * 1024
    shutil.copyfile(stack.models / "no-bundle.tar.gz", source / "no-bundle-14.tar.gz")
    temp = tmp_path / "tmp"
    temp.mkdir()
    base = _gateway_argv(stack.container.url, source, stack.moto, tmp_path / "unused")

    def argv(port: int) -> list[str]:
        args = base(port)
        cut = args.index("--models-dir")
        limits = ["--max-model-size-mb", "64", "--failed-load-cleanup-s", "1"]
        return [*args[:cut], *args[cut + 2 :], *limits]

    gateway = Service("sagemaker-local-limits", argv, "/_local/health", {**stack.env, "TMPDIR": str(temp)})
    gateway.start()
    try:
        (models_dir,) = list(temp.glob("sagemaker-local-models-*"))
        runtime = runtime_client(gateway.url)
        with pytest.raises(runtime.exceptions.ClientError, match=r"unpacks to 209715200 bytes") as info:
            runtime.invoke_endpoint(
                EndpointName="spleen", TargetModel="bomb.tar.gz", ContentType="application/json", Body=b"{}"
            )
        assert "--max-model-size-mb" in info.value.response["Error"]["Message"]
        assert _entries(models_dir) - {".async-jobs"} == set(), _entries(models_dir)
        with pytest.raises(runtime.exceptions.ModelError, match=r"failed to load model 'no-bundle-14"):
            runtime.invoke_endpoint(
                EndpointName="spleen",
                TargetModel="no-bundle-14.tar.gz",
                ContentType="application/json",
                Body=b"{}",
            )
        deadline = time.monotonic() + 30
        while _entries(models_dir) - {".async-jobs"}:
            assert time.monotonic() < deadline, f"the failed load's folder stayed: {_entries(models_dir)}"
            time.sleep(0.2)
    finally:
        gateway.stop()
    assert not models_dir.exists(), "the default models folder outlived the gateway"


# --- 9. leaks
# ----------------------------------------------------------------------------------------------------
def test_unknown_and_rejected_targets_leave_no_folder(stack: Stack) -> None:
    models_dir = _models_dir(stack)
    before = _entries(models_dir)
    for target in [f"unknown-{i}.tar.gz" for i in range(5)] + ["not-a-tarball.tar.gz", "sub/missing.tar.gz"]:
        response, _ = stack.invoke_error(stack.cases["good0"].body(), target=target)
        assert response["Error"]["Code"] == "ValidationError", response["Error"]
    assert _entries(models_dir) == before, _entries(models_dir) - before


# --- 10. the management API never lists a host folder
# -----------------------------------------------------------------------------------------
def test_management_api_errors_do_not_list_host_folders(stack: Stack) -> None:
    listing = sorted(os.listdir("/etc"))
    body = json.dumps({"model_name": "etc-probe", "url": "/etc"}).encode()
    status, _, raw = http("POST", f"{stack.container.url}/models", body, JSON)
    try:
        assert status >= 400, raw
        failures = stack.runtime_dir / "load-failures"
        deadline = time.monotonic() + 30  # the worker reports its failed load just after MMS answers
        while not [p for p in failures.glob("*.txt") if "'/etc'" in p.read_text()]:
            assert time.monotonic() < deadline, "no load failure was reported for /etc"
            time.sleep(0.2)
    finally:
        http("DELETE", f"{stack.container.url}/models/etc-probe")
    texts = [raw.decode(errors="replace"), stack.container.log_text()]
    texts += [p.read_text() for p in failures.glob("*.txt") if "'/etc'" in p.read_text()]
    assert any("no MONAI bundle" in t for t in texts[2:]), texts[2:]
    for name in listing[:10]:  # the folder's first entries, as a listing would show them
        assert not any(f"'{name}'" in t for t in texts), name

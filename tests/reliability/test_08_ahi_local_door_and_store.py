"""ahi-local at its door and in its store, each on a server of its own (no container needed):

* a store that cannot write (``ulimit -f``) fails the import job as a server error, logged at ERROR, with
  nothing half-written; an unwritable ``outputS3Uri`` fails the job before anything is stored, and the retry
  creates exactly one image set;
* JSON nested too deep is a 400 with the reason; a body over 2 MiB is refused from its Content-Length, a body
  that stops arriving is answered 408, and so is a request head that does not arrive in time (nothing sent, or
  half a head trickled a byte at a time);
* a restart after ``kill -9`` mid-import removes the killed job's frame files, temporary files and the
  frames of deleted image sets;
* SigV4 signatures are verified against the configured credentials; ``/_local/faults`` is off unless
  enabled; a non-loopback host without authentication is refused.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
import uuid
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from ahi_connector.import_jobs import read_job_output, start_import_job, wait_for_import_job
from devstack.ahi_local.cli import build_parser, serve_command, settings_from_args
from devstack.clients import ahi_client, s3_client
from devstack.importing import DEFAULT_ROLE_ARN, create_datastore, ensure_bucket, import_folder, upload_folder
from devstack.processes import DUMMY_AWS_ENV
from devstack.synthetic import SeriesSpec, write_series
from tests.container.conftest import http
from tests.reliability.conftest import Service

BUCKET = "rel-ahi-store"
#: Frames of 384×384 noise are ~200 kB as HTJ2K; the store's file size limit below is 64 KiB.
BIG = SeriesSpec(slices=4, rows=384, columns=384, seed=41, patient_id="REL-BIG")


def _start(data_dir: Path, moto: str, *extra: str, env: dict[str, str] | None = None, fsize_kib: int = 0):
    def argv(port: int) -> list[str]:
        args = serve_command(port, data_dir, s3_endpoint_url=moto, extra=list(extra))
        if fsize_kib:  # the store's "disk" is full past this file size (EFBIG, errno 27)
            return ["bash", "-c", f'ulimit -f {fsize_kib} && exec "$@"', "bash", *args]
        return args

    service = Service("ahi-local-store", argv, "/_local/health", {**DUMMY_AWS_ENV, **(env or {})})
    service.start()
    return service


def _frame_files(data_dir: Path) -> set[str]:
    return {p.stem for p in data_dir.glob("datastores/*/frames/*/*.*") if not p.name.startswith(".")}


def _live_frames(ahi: Any, datastore_id: str) -> set[str]:
    frames: set[str] = set()
    for page in ahi.get_paginator("search_image_sets").paginate(datastoreId=datastore_id):
        for summary in page["imageSetsMetadataSummaries"]:
            blob = ahi.get_image_set_metadata(datastoreId=datastore_id, imageSetId=summary["imageSetId"])
            meta = json.loads(gzip.decompress(blob["imageSetMetadataBlob"].read()))
            for series in meta["Study"]["Series"].values():
                for inst in series["Instances"].values():
                    frames.update(f["ID"] for f in inst.get("ImageFrames", []))
    return frames


def _image_sets(ahi: Any, datastore_id: str) -> list[dict[str, Any]]:
    pages = ahi.get_paginator("search_image_sets").paginate(datastoreId=datastore_id)
    return [s for page in pages for s in page["imageSetsMetadataSummaries"]]


@pytest.fixture(scope="module")
def big_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rel-big")
    write_series(folder / "big", BIG)
    return folder / "big"


# --- 2. disk full
# -----------------------------------------------------------------------------------------------------------
def test_disk_full_fails_the_job_as_a_server_error(moto_s3: str, tmp_path: Path, big_series: Path) -> None:
    service = _start(tmp_path / "store", moto_s3, fsize_kib=64)
    try:
        ahi, s3 = ahi_client(service.url), s3_client(moto_s3)
        datastore = create_datastore(ahi, "disk-full")
        result = import_folder(ahi, s3, datastore, big_series)
        assert result.job_status == "FAILED", result.job_properties
        message = result.job_properties.get("message", "")
        assert "InternalServerError" in message and "Errno 27" in message, message
        assert result.failure and {f["exception"]["exceptionType"] for f in result.failure} == {
            "InternalServerError"
        }, result.failure
        assert result.manifest["jobSummary"]["numberOfFilesWithServerError"] == BIG.slices
        assert _image_sets(ahi, datastore) == []
        assert _frame_files(tmp_path / "store") == set(), "frames of the failed job stayed"
        assert " ERROR " in service.log_text() and "the store cannot write" in service.log_text()
    finally:
        service.stop()


# --- 3. unwritable output location
# ------------------------------------------------------------------------------------------
def test_unwritable_output_fails_before_anything_is_stored(
    moto_s3: str, tmp_path: Path, big_series: Path
) -> None:
    service = _start(tmp_path / "store", moto_s3)
    try:
        ahi, s3 = ahi_client(service.url), s3_client(moto_s3)
        ensure_bucket(s3, BUCKET)
        datastore = create_datastore(ahi, "bad-output")
        prefix = f"input/{uuid.uuid4().hex}"
        upload_folder(s3, big_series, BUCKET, prefix)
        source = f"s3://{BUCKET}/{prefix}/"
        job = start_import_job(
            ahi, datastore, source, "s3://no-such-output-bucket-rel14/out/", DEFAULT_ROLE_ARN
        )
        props = wait_for_import_job(ahi, datastore, job, 120)
        assert props["jobStatus"] == "FAILED"
        assert "no-such-output-bucket-rel14" in props.get("message", ""), props
        assert _image_sets(ahi, datastore) == [], "a failed job committed an image set"
        assert _frame_files(tmp_path / "store") == set()
        # The retry with a good output location creates one image set, version 1, one frame per slice.
        out = f"s3://{BUCKET}/output/{uuid.uuid4().hex}/"
        job = start_import_job(ahi, datastore, source, out, DEFAULT_ROLE_ARN)
        assert wait_for_import_job(ahi, datastore, job, 120)["jobStatus"] == "COMPLETED"
        assert len(read_job_output(s3, out, datastore, job).success) == BIG.slices
        (image_set,) = _image_sets(ahi, datastore)
        assert image_set["version"] == 1
        assert len(_live_frames(ahi, datastore)) == BIG.slices == len(_frame_files(tmp_path / "store"))
    finally:
        service.stop()


# --- 5, 8, 10. the door: nesting, body limit, read timeout, faults off, SigV4
# -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def door(moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = _start(tmp_path_factory.mktemp("rel-door"), moto_s3, env={"AHI_LOCAL_BODY_TIMEOUT_S": "1"})
    yield service
    service.stop()


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _raw(port: int, head: str, body: bytes, timeout: float = 20.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode() + body)
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply) < reply.index(b"\r\n\r\n") + 30:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply


def test_deeply_nested_json_is_a_400(door: Service) -> None:
    status, headers, body = http(
        "POST", f"{door.url}/datastore", b"[" * 100_000, {"Content-Type": "application/json"}
    )
    assert status == 400, body[:300]
    assert _lower(headers).get("x-amzn-errortype") == "ValidationException"
    assert "deeper than 32 levels" in json.loads(body)["message"]
    assert "Traceback" not in door.log_text() and "RecursionError" not in door.log_text()


def test_oversized_body_is_refused_before_it_is_read(door: Service) -> None:
    head = (
        "POST /datastore HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
    )
    reply = _raw(door.port, head, b"{" + b" " * 1000)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"at most 2097152 bytes" in reply


def test_body_that_stops_arriving_is_answered_408(door: Service) -> None:
    head = (
        "POST /datastore HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    reply = _raw(door.port, head, b'{"datastoreName": ')
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"RequestTimeoutException" in reply and b"stopped arriving" in reply


def _read_until_closed(sock: socket.socket) -> bytes:
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


def test_a_connection_that_sends_no_head_is_answered_408_and_closed(door: Service) -> None:
    """The door's timeout is 1 s here (AHI_LOCAL_BODY_TIMEOUT_S): the head has that long, as the body does."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", door.port), timeout=20) as sock:
        reply = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"RequestTimeoutException" in reply and b"request head" in reply
    assert time.monotonic() - started < 15


def test_a_head_trickled_a_byte_at_a_time_does_not_move_the_deadline(door: Service) -> None:
    head = b"GET /_local/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", door.port), timeout=20) as sock:
        try:
            for byte in head:  # 200+ bytes at 0.05 s: >10 s of trickle, far past the 1 s deadline
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass  # the server closed the connection while we were still sending
        reply = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - started < 8, "the trickle kept the connection open"


def test_a_kept_alive_connection_serves_its_next_request(door: Service) -> None:
    connection = HTTPConnection("127.0.0.1", door.port, timeout=20)
    try:
        for _ in range(3):
            connection.request("GET", "/_local/health")
            response = connection.getresponse()
            assert response.status == 200 and response.read()
            assert response.getheader("connection", "").lower() != "close"
            time.sleep(0.5)  # idle between requests, within the head deadline and uvicorn's keep-alive
    finally:
        connection.close()


def test_fault_injection_is_off_unless_enabled(door: Service) -> None:
    status, _, body = http(
        "PUT", f"{door.url}/_local/faults", b'{"error_rate": 1}', {"Content-Type": "application/json"}
    )
    assert status == 404 and b"--enable-faults" in body, body
    status, _, body = http("GET", f"{door.url}/_local/faults")
    assert status == 404, body


def test_non_loopback_host_needs_sigv4_and_credentials() -> None:
    parse = build_parser().parse_args
    with pytest.raises(ValueError, match=r"needs credentials"):
        settings_from_args(parse(["serve", "--host", "0.0.0.0", "--data-dir", "x"]), {})
    with pytest.raises(ValueError, match=r"exposes the store .* --auth sigv4"):
        settings_from_args(parse(["serve", "--host", "0.0.0.0", "--auth", "none", "--data-dir", "x"]), {})
    env = {"AHI_LOCAL_ACCESS_KEY_ID": "AKIALOCAL", "AHI_LOCAL_SECRET_ACCESS_KEY": "s" * 40}
    settings = settings_from_args(parse(["serve", "--host", "0.0.0.0", "--data-dir", "x"]), env)
    assert settings.credentials == (("AKIALOCAL", "s" * 40),)
    assert settings_from_args(parse(["serve", "--data-dir", "x"]), env).credentials is None
    assert settings_from_args(parse(["serve", "--data-dir", "x"]), env).enable_faults is False


def _client(url: str, key: str, secret: str) -> Any:
    return boto3.client(
        "medical-imaging",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(inject_host_prefix=False, retries={"max_attempts": 1}),
    )


def test_sigv4_is_verified_against_the_configured_credentials(moto_s3: str, tmp_path: Path) -> None:
    key, secret = "AKIAAHILOCALTEST", "local-secret-" + uuid.uuid4().hex
    env = {"AHI_LOCAL_ACCESS_KEY_ID": key, "AHI_LOCAL_SECRET_ACCESS_KEY": secret}
    service = _start(tmp_path / "store", moto_s3, "--auth", "sigv4", env=env)
    try:
        good = _client(service.url, key, secret)
        datastore = good.create_datastore(datastoreName="signed", clientToken=uuid.uuid4().hex)["datastoreId"]
        listed = good.list_datastores(maxResults=5)["datastoreSummaries"]
        assert [d["datastoreId"] for d in listed] == [datastore]
        with pytest.raises(botocore.exceptions.ClientError, match="InvalidSignatureException"):
            _client(service.url, key, secret + "x").list_datastores()
        with pytest.raises(botocore.exceptions.ClientError, match="UnrecognizedClientException"):
            _client(service.url, "AKIAUNKNOWN", secret).list_datastores()
        status, headers, body = http("GET", f"{service.url}/datastore")
        assert status == 403
        assert _lower(headers).get("x-amzn-errortype") == "MissingAuthenticationTokenException"
        status, _, _ = http(
            "PUT", f"{service.url}/_local/faults", b"{}", {"Content-Type": "application/json"}
        )
        assert status == 403
        assert http("GET", f"{service.url}/_local/health")[0] == 200
    finally:
        service.stop()


# --- 9. restart garbage-collects
# --------------------------------------------------------------------------------------------
def test_restart_after_kill_removes_unreferenced_frames(
    moto_s3: str, tmp_path: Path, big_series: Path
) -> None:
    data_dir = tmp_path / "store"
    folder = tmp_path / "series"
    write_series(folder / "keep", SeriesSpec(slices=3, seed=51, patient_id="REL-KEEP"))
    write_series(folder / "drop", SeriesSpec(slices=3, seed=52, patient_id="REL-DROP"))
    many = SeriesSpec(slices=60, rows=128, columns=128, seed=53, patient_id="REL-MANY")
    write_series(tmp_path / "many", many)
    service = _start(data_dir, moto_s3)
    try:
        ahi, s3 = ahi_client(service.url), s3_client(moto_s3)
        datastore = create_datastore(ahi, "gc")
        result = import_folder(ahi, s3, datastore, folder)
        assert result.job_status == "COMPLETED" and len(result.image_set_ids) == 2
        dropped = result.image_set_ids[1]
        ahi.delete_image_set(datastoreId=datastore, imageSetId=dropped)
        before = len(_frame_files(data_dir))
        ensure_bucket(s3, BUCKET)
        prefix = f"input/{uuid.uuid4().hex}"
        upload_folder(s3, tmp_path / "many", BUCKET, prefix)
        out = f"s3://{BUCKET}/output/{uuid.uuid4().hex}/"
        job = start_import_job(ahi, datastore, f"s3://{BUCKET}/{prefix}/", out, DEFAULT_ROLE_ARN)
        deadline = time.monotonic() + 60
        while len(_frame_files(data_dir)) < before + 5:  # kill -9 once the job has stored a few frames
            assert time.monotonic() < deadline, "the import stored no frames"
            time.sleep(0.01)
        service.crash()
        (data_dir / "datastores" / datastore / "frames" / "zz").mkdir(parents=True, exist_ok=True)
        (data_dir / "datastores" / datastore / "frames" / "zz" / ".zzz.jph.x1.tmp").write_bytes(b"partial")
        service.start()
        props = wait_for_import_job(ahi, datastore, job, 120)
        assert props["jobStatus"] == "COMPLETED", props
        assert _frame_files(data_dir) == _live_frames(ahi, datastore), "unreferenced frame files stayed"
        assert not list(data_dir.glob("**/*.tmp"))
        assert "garbage collected" in service.log_text()
    finally:
        service.stop()

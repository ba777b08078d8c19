"""Fixtures for the container tests: real ``container/serve`` (MMS + Java) and ``sagemaker-local`` processes.

MMS is heavy (Java + one Python worker per model): each test module starts at most one ``serve`` and stops it
at module end; the data (datastore + imported synthetic CT series) is shared by the whole session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
from botocore.config import Config

from container.gateway.cli import serve_command as gateway_command
from tests.support.clients import REGION, ahi_client, s3_client
from tests.support.importing import create_datastore, ensure_bucket, import_folder
from tests.support.servers import DUMMY_AWS_ENV, free_port
from tests.support.synthetic import SeriesSpec, write_series

ROOT = Path(__file__).resolve().parents[2]
SERVE = ROOT / "container" / "serve"
RESULTS_BUCKET = "spleen-results"
N_SERIES = 8


def free_mms_port() -> int:
    """A free port below 32767 (multi-model-server 1.1.11 rejects higher ones)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000..32000")


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args!r} exited with {proc.returncode}; log:\n{log.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s} s; log:\n{log.read_text()[-4000:]}")


def service_env(moto_url: str, ahi_url: str) -> dict[str, str]:
    return {
        **DUMMY_AWS_ENV,
        "AWS_ENDPOINT_URL_S3": moto_url,
        "AWS_ENDPOINT_URL_MEDICAL_IMAGING": ahi_url,
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
    }


@dataclasses.dataclass
class RunningProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running(
    argv: Sequence[str], ready_path: str, url: str, env: Mapping[str, str], name: str, timeout_s: float = 120
) -> Iterator[RunningProcess]:
    log = Path(tempfile.mkdtemp(prefix=f"{name}-")) / f"{name}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            list(argv), stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
        )
    running_proc = RunningProcess(proc, url, log)
    # Remember every descendant seen, so nothing outlives the test even if the tree is re-parented.
    seen: dict[int, psutil.Process] = {}
    try:
        _wait_http(url + ready_path, proc, log, timeout_s)
        yield running_proc
    finally:
        for p in running_proc.tree():
            seen.setdefault(p.pid, p)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        _, alive = psutil.wait_procs(list(seen.values()), timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


@contextlib.contextmanager
def serve(
    env: Mapping[str, str], args: Sequence[str] = (), port: int | None = None, timeout_s: float = 120
) -> Iterator[RunningProcess]:
    """``container/serve`` on 127.0.0.1 (multi-model unless args say otherwise)."""
    port = port or free_mms_port()
    full_env = {"SAGEMAKER_MULTI_MODEL": "true", **env, "SAGEMAKER_BIND_TO_PORT": str(port)}
    with running(
        [str(SERVE), *args], "/ping", f"http://127.0.0.1:{port}", full_env, "serve", timeout_s
    ) as rp:
        yield rp


@contextlib.contextmanager
def gateway(
    env: Mapping[str, str], container_url: str, model_data_url: str, s3_url: str, extra: Sequence[str] = ()
) -> Iterator[RunningProcess]:
    port = free_port()
    argv = gateway_command(port, container_url, model_data_url, s3_endpoint_url=s3_url, extra=extra)
    with running(argv, "/_local/health", f"http://127.0.0.1:{port}", env, "sagemaker-local", 60) as rp:
        yield rp


def runtime_client(url: str) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(read_timeout=600, retries={"max_attempts": 1}),
    )


@dataclasses.dataclass(frozen=True)
class ImportedSeries:
    datastore_id: str
    image_set_id: str
    study_uid: str
    series_uid: str
    slices: int


@dataclasses.dataclass(frozen=True)
class Dataset:
    datastore_id: str
    series: list[ImportedSeries]


@pytest.fixture(scope="session")
def container_dataset(moto_s3: str, ahi_local: str, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """A datastore with N_SERIES synthetic CT series, one image set each (distinct study/series UIDs)."""
    ahi, s3 = ahi_client(ahi_local), s3_client(moto_s3)
    datastore = create_datastore(ahi, name="container-tests")
    ensure_bucket(s3, RESULTS_BUCKET)
    root = tmp_path_factory.mktemp("container-series")
    imported = []
    for i in range(N_SERIES):
        spec = SeriesSpec(
            slices=16 + 2 * i,
            rows=64,
            columns=64,
            patient_id=f"CT-{i:03d}",
            seed=i,
            series_description=f"container test {i}",
        )
        written = write_series(root / f"s{i}", spec)
        result = import_folder(ahi, s3, datastore, root / f"s{i}")
        assert result.job_status == "COMPLETED", result.failure
        assert len(result.image_set_ids) == 1, result.image_set_ids
        imported.append(
            ImportedSeries(
                datastore, result.image_set_ids[0], written.study_uid, written.series_uid, spec.slices
            )
        )
    return Dataset(datastore, imported)


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``model.tar.gz`` built by ``python -m model.package`` (bundle + code/)."""
    folder = tmp_path_factory.mktemp("model-store")
    subprocess.run(
        [sys.executable, "-m", "model.package", "--output", str(folder / "model.tar.gz")],
        check=True,
        cwd=ROOT,
    )
    return folder


def read_json(body: bytes) -> Any:
    return json.loads(body.decode())

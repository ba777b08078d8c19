"""Fixtures for the container tests: real ``container/serve`` (MMS + Java) and ``sagemaker-local`` processes.

MMS is heavy (Java + one Python worker per model): each test module starts at most one ``serve`` and stops it
at module end; the data (datastore + imported synthetic CT series) is shared by the whole session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from devstack.clients import REGION, ahi_client, s3_client
from devstack.importing import create_datastore, ensure_bucket, import_folder
from devstack.processes import DUMMY_AWS_ENV, ServerProcess, free_port
from devstack.sagemaker_local.cli import serve_command as gateway_command
from devstack.synthetic import SeriesSpec, write_series

ROOT = Path(__file__).resolve().parents[2]
SERVE = ROOT / "container" / "serve"
RESULTS_BUCKET = "spleen-results"
N_SERIES = 8


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


def service_env(moto_url: str, ahi_url: str) -> dict[str, str]:
    return {
        **DUMMY_AWS_ENV,
        "AWS_ENDPOINT_URL_S3": moto_url,
        "AWS_ENDPOINT_URL_MEDICAL_IMAGING": ahi_url,
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
    }


#: A server started and waited for by devstack's one process helper (also what ``running`` yields).
RunningProcess = ServerProcess


@contextlib.contextmanager
def running(
    argv: Sequence[str], ready_path: str, url: str, env: Mapping[str, str], name: str, timeout_s: float = 120
) -> Iterator[ServerProcess]:
    with ServerProcess(name, argv, url + ready_path, url, env=env, timeout_s=timeout_s) as proc:
        yield proc


@contextlib.contextmanager
def serve(
    env: Mapping[str, str], args: Sequence[str] = (), port: int | None = None, timeout_s: float = 120
) -> Iterator[RunningProcess]:
    """``container/serve`` on 127.0.0.1 (multi-model unless args say otherwise)."""
    port = port or free_port()
    full_env = {"SAGEMAKER_MULTI_MODEL": "true", **env, "SAGEMAKER_BIND_TO_PORT": str(port)}
    with running(
        [str(SERVE), *args], "/ping", f"http://127.0.0.1:{port}", full_env, "serve", timeout_s
    ) as rp:
        yield rp


@contextlib.contextmanager
def single_model_serve(
    moto_url: str, ahi_url: str, model_store: Path, root: Path
) -> Iterator[RunningProcess]:
    """``container/serve`` in single-model mode on ``model.tar.gz`` extracted under ``root/model``, yielded
    once the model is loaded (/ping answers before that; serve logs "serving on" once a worker loaded it)."""
    model_dir = root / "model"
    with tarfile.open(model_store / "model.tar.gz") as tar:
        tar.extractall(model_dir, filter="data")
    env = {**service_env(moto_url, ahi_url), "SAGEMAKER_MULTI_MODEL": "false"}
    with serve(env, ["--model-dir", str(model_dir)], timeout_s=300) as container:
        deadline = time.monotonic() + 300
        while "serving on" not in container.log_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        yield container


@contextlib.contextmanager
def gateway(
    env: Mapping[str, str],
    container_url: str,
    model_data_url: str,
    s3_url: str,
    extra: Sequence[str] = (),
    endpoint_names: Sequence[str] = ("spleen", "spleen-async"),
) -> Iterator[RunningProcess]:
    port = free_port()
    argv = gateway_command(
        port,
        container_url,
        model_data_url,
        endpoint_names=endpoint_names,
        s3_endpoint_url=s3_url,
        extra=extra,
    )
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

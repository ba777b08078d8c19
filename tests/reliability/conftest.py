"""The whole local stack for the reliability suite, started once for ``tests/reliability/``, stopped after it.

    boto3 ─▶ sagemaker-local (gateway) ─▶ container/serve (MMS + 2 workers) ─▶ ResettingProxy ─▶ ahi-local
                     └── async: moto S3 in/out                    └── S3 outputs (moto)

* ahi-local runs on its own durable store and fixed port so a test can restart it mid-export; faults are
  switched at runtime (``PUT /_local/faults``), targeted by frame ID where possible, random rates seeded.
* The container reaches AHI only through :class:`~tests.reliability.proxy.ResettingProxy` (connection resets).
* One ``serve`` for the whole folder (multi-model-server: one per machine; a lock file serialises suites that
  start MMS); the last module SIGTERMs it. Every process is stopped at the end, by PID.
* Test data: small synthetic CT series (96 px, 30-36 slices) with a recognisable patient name/ID (the PHI
  canary the security tests look for in logs), plus bad cases: an MR-only image set, a 1-slice CT, an RGB CT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import psutil
import pytest

from devstack.ahi_local.cli import serve_command as ahi_local_command
from devstack.clients import ahi_client, s3_client
from devstack.importing import create_datastore, ensure_bucket, import_folder
from devstack.processes import DUMMY_AWS_ENV, free_port
from devstack.sagemaker_local.cli import serve_command as gateway_command
from devstack.synthetic import SeriesSpec, write_series
from tests.container.conftest import (
    ROOT,
    RunningProcess,
    http,
    running,
    runtime_client,
    serve,
    service_env,
)
from tests.reliability.proxy import ResettingProxy
from tests.support.ahi_metadata import update_instance_attributes

BUCKET = "reliability"
TARGET = "model.tar.gz"
JSON = {"Content-Type": "application/json"}
#: PHI canaries: the patient name / ID of every test series; they must never appear in a log.
PHI_NAME = "Canaryfield^Philippa"
PHI_ID = "PHI-CANARY-7731"
#: The dummy secret key given to every process; must not appear in logs either.
SECRET = "testing-secret-do-not-log-0123456789"
MMS_LOCK = Path("/tmp/ahi-spleen-mms.lock")
MMS_LOCK_WAIT_S = 900.0
#: The container's response timeout here; the handler gives one AHI export half of it ("configured deadline").
TIMEOUT_S = 50
EXPORT_DEADLINE_S = TIMEOUT_S / 2
SERVE_ENV = {"SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": str(TIMEOUT_S)}


@dataclasses.dataclass(frozen=True)
class Case:
    """One imported series: its IDs and its frame IDs in instance order."""

    name: str
    datastore_id: str
    image_set_id: str
    study_uid: str
    series_uid: str
    slices: int
    frame_ids: tuple[str, ...]

    def request(self) -> dict[str, str]:
        return {"datastoreId": self.datastore_id, "imageSetId": self.image_set_id}

    def body(self, **output: Any) -> bytes:
        obj: dict[str, Any] = {"inputs": [self.request()]}
        if output:
            obj["output"] = output
        return json.dumps(obj).encode()


GOOD_SPECS = {
    f"good{i}": SeriesSpec(
        slices=30 + 2 * i,
        rows=96,
        columns=96,
        pixel_spacing=(1.5, 1.5),
        slice_spacing=2.0,
        origin=(-72.0, -72.0, -30.0),
        seed=10 + i,
    )
    for i in range(4)
}
BAD_SPECS = {
    "mr_only": SeriesSpec(slices=20, modality="MR", seed=21),
    "one_slice": SeriesSpec(slices=1, seed=22),
    "rgb": SeriesSpec(slices=20, bits_allocated=8, bits_stored=8, signed=False, photometric="RGB", seed=23),
    "bad_metadata": SeriesSpec(
        slices=20, seed=24
    ),  # one instance's Slice Thickness set to "thick" after import
}
BAD_METADATA = {"SliceThickness": "thick"}


class Service:
    """A server process on a fixed 127.0.0.1 port that can be stopped, crashed and started again (same port);
    its logs are kept across restarts. ``argv(port)`` builds the command line."""

    def __init__(
        self, name: str, argv: Callable[[int], list[str]], ready_path: str, env: dict[str, str]
    ) -> None:
        self.name = name
        self.argv = argv
        self.ready_path = ready_path
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs: list[Path] = []
        self._stack: contextlib.ExitStack | None = None
        self.process: RunningProcess | None = None

    def start(self) -> None:
        stack = contextlib.ExitStack()
        for attempt in range(50):  # the port may sit in TIME_WAIT for a moment after a stop
            try:
                self.process = stack.enter_context(
                    running(self.argv(self.port), self.ready_path, self.url, self.env, self.name, 60)
                )
                break
            except RuntimeError:
                if attempt == 49:
                    raise
                time.sleep(0.2)
        self._stack = stack
        assert self.process is not None
        self.logs.append(self.process.log)

    def stop(self) -> None:
        """SIGTERM (then SIGKILL after a grace period) the process and everything it started."""
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def crash(self) -> None:
        """SIGKILL the process (no graceful shutdown: in-flight requests see their connections drop)."""
        if self.process is not None and self.process.proc.poll() is None:
            self.process.proc.kill()
            self.process.proc.wait(timeout=10)
        self.stop()

    def tree(self) -> list[psutil.Process]:
        return self.process.tree() if self.process is not None else []

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def wait_log(self, text: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.log_text():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not in the {self.name} log after {timeout_s} s")
            time.sleep(0.1)


class AhiLocal(Service):
    """ahi-local on a durable store; faults switched at runtime."""

    def __init__(self, data_dir: Path, s3_url: str, env: dict[str, str]) -> None:
        def argv(port: int) -> list[str]:
            return ahi_local_command(port, data_dir, s3_endpoint_url=s3_url, extra=["--enable-faults"])

        super().__init__("ahi-local", argv, "/_local/health", env)

    def faults(self, **settings: Any) -> dict[str, Any]:
        status, _, body = http(
            "PUT", f"{self.url}/_local/faults", json.dumps(settings).encode(), JSON, timeout=10
        )
        assert status == 200, body
        return json.loads(body)

    def clear_faults(self) -> None:
        self.faults(
            throttle_rate=0,
            error_rate=0,
            latency_ms=0,
            corrupt_rate=0,
            fail_frames=[],
            hang_frames=[],
            corrupt_frames=[],
            operations=[],
            hang_seconds=300,
            seed=None,
        )


@dataclasses.dataclass
class Stack:
    moto: str
    ahi: AhiLocal
    proxy: ResettingProxy
    container: RunningProcess
    gateway: Service
    env: dict[str, str]
    runtime_dir: Path
    work_dir: Path
    models: Path
    cases: dict[str, Case]
    datastore_id: str

    def runtime(self) -> Any:
        return runtime_client(self.gateway.url)

    def invoke(self, body: bytes, target: str = TARGET) -> dict[str, Any]:
        """A successful InvokeEndpoint through the gateway; the parsed JSON body."""
        resp = self.runtime().invoke_endpoint(
            EndpointName="spleen", TargetModel=target, ContentType="application/json", Body=body
        )
        return json.loads(resp["Body"].read())

    def invoke_error(
        self,
        body: bytes,
        target: str = TARGET,
        content_type: str = "application/json",
    ) -> tuple[dict[str, Any], float]:
        """A failing InvokeEndpoint: (the ClientError's response, seconds it took)."""
        started = time.monotonic()
        with pytest.raises(botocore.exceptions.ClientError) as info:
            self.runtime().invoke_endpoint(
                EndpointName="spleen", TargetModel=target, ContentType=content_type, Body=body
            )
        return info.value.response, time.monotonic() - started

    def model_name(self) -> str:
        from devstack.sagemaker_local.models import model_key

        return model_key(TARGET)


def _frame_ids(meta: dict[str, Any], series_uid: str) -> tuple[str, ...]:
    instances = meta["Study"]["Series"][series_uid]["Instances"].values()
    ordered = sorted(instances, key=lambda inst: int(inst["DICOM"].get("InstanceNumber", 0)))
    return tuple(frame["ID"] for inst in ordered for frame in inst["ImageFrames"])


def import_cases(ahi_url: str, moto: str, folder: Path) -> tuple[str, dict[str, Case]]:
    """Write every series into one folder, import it in one job; map each series to its image set."""
    specs = {**GOOD_SPECS, **BAD_SPECS}
    written = {}
    for number, (name, spec) in enumerate(specs.items(), start=1):
        spec = dataclasses.replace(
            spec,
            patient_name=PHI_NAME,
            patient_id=PHI_ID,
            series_number=number,
            series_description=f"reliability {name}",
            accession_number=f"REL{number:04d}",
        )
        written[name] = write_series(folder / name, spec)
    ahi = ahi_client(ahi_url)
    datastore = create_datastore(ahi, "reliability")
    result = import_folder(ahi, s3_client(moto), datastore, folder)
    assert result.job_status == "COMPLETED" and not result.failure, result.failure
    by_series: dict[str, tuple[str, dict[str, Any]]] = {}
    for image_set_id in result.image_set_ids:
        blob = ahi.get_image_set_metadata(datastoreId=datastore, imageSetId=image_set_id)[
            "imageSetMetadataBlob"
        ]
        meta = json.loads(gzip.decompress(blob.read()))
        for series_uid in meta["Study"]["Series"]:
            by_series[series_uid] = (image_set_id, meta)
    cases = {}
    for name, w in written.items():
        image_set_id, meta = by_series[w.series_uid]
        cases[name] = Case(
            name,
            datastore,
            image_set_id,
            w.study_uid,
            w.series_uid,
            w.spec.slices,
            _frame_ids(meta, w.series_uid),
        )
    bad = written["bad_metadata"]
    update_instance_attributes(
        ahi,
        datastore,
        cases["bad_metadata"].image_set_id,
        bad.series_uid,
        bad.sop_instance_uids[3],
        BAD_METADATA,
    )
    return datastore, cases


def _tar(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)


def build_models(folder: Path) -> Path:
    """``model.tar.gz`` (python -m model.package) and two broken archives: no bundle, corrupt model.ts."""
    subprocess.run(
        [sys.executable, "-m", "model.package", "--output", str(folder / TARGET)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    good = folder / "extracted"
    with tarfile.open(folder / TARGET) as tar:
        tar.extractall(good, filter="data")
    no_bundle = folder / "no-bundle"
    shutil.copytree(good / "code", no_bundle / "code")
    (no_bundle / "README.txt").write_text("an archive with code/ but no spleen_ct_segmentation bundle\n")
    _tar(no_bundle, folder / "no-bundle.tar.gz")
    corrupt = folder / "corrupt-ts"
    shutil.copytree(good, corrupt)
    (corrupt / "spleen_ct_segmentation" / "models" / "model.ts").write_bytes(
        b"PK\x03\x04 not a TorchScript archive"
    )
    _tar(corrupt, folder / "corrupt-model-ts.tar.gz")
    (folder / "not-a-tarball.tar.gz").write_bytes(b"\x1f\x8b\x08 truncated gzip")
    return folder


@contextlib.contextmanager
def mms_lock() -> Iterator[None]:
    """Serialise suites that start multi-model-server on this machine."""
    MMS_LOCK.touch(exist_ok=True)
    with open(MMS_LOCK, "r+") as fh:
        deadline = time.monotonic() + MMS_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another test run held {MMS_LOCK} for {MMS_LOCK_WAIT_S:.0f} s"
                    ) from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _gateway_argv(
    container_url: str, models: Path, moto: str, models_dir: Path
) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return gateway_command(
            port, container_url, models, endpoint_names=["spleen"], models_dir=models_dir,
            s3_endpoint_url=moto,
            extra=["--async-output", f"s3://{BUCKET}/async-out", "--async-failure", f"s3://{BUCKET}/async-failed"],
        )  # fmt: skip

    return argv


@pytest.fixture(scope="package")
def stack(moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base_env = {**DUMMY_AWS_ENV, "AWS_SECRET_ACCESS_KEY": SECRET}
    ahi = AhiLocal(tmp_path_factory.mktemp("rel-ahi-store"), moto_s3, base_env)
    models = build_models(tmp_path_factory.mktemp("rel-models"))
    runtime_dir = tmp_path_factory.mktemp("rel-runtime")
    work_dir = tmp_path_factory.mktemp("rel-work")
    models_dir = tmp_path_factory.mktemp("rel-gateway-models")
    ensure_bucket(s3_client(moto_s3), BUCKET)
    ahi.start()
    try:
        datastore, cases = import_cases(ahi.url, moto_s3, tmp_path_factory.mktemp("rel-dicom"))
        with ResettingProxy(ahi.port) as proxy, mms_lock():
            env = {
                **service_env(moto_s3, proxy.url),
                "AWS_SECRET_ACCESS_KEY": SECRET,
                "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
                "SPLEEN_WORK_DIR": str(work_dir),
                "SPLEEN_RUNTIME_DIR": str(runtime_dir),
                **SERVE_ENV,
            }
            with serve(env) as container:
                gw = Service("sagemaker-local", _gateway_argv(container.url, models, moto_s3, models_dir),
                             "/_local/health", env)  # fmt: skip
                gw.start()
                try:
                    yield Stack(
                        moto_s3,
                        ahi,
                        proxy,
                        container,
                        gw,
                        env,
                        runtime_dir,
                        work_dir,
                        models,
                        cases,
                        datastore,
                    )
                finally:
                    gw.stop()
    finally:
        ahi.stop()


@pytest.fixture
def faults(stack: Stack) -> Iterator[AhiLocal]:
    """ahi-local with its faults cleared again after the test (and the proxy's pending resets dropped)."""
    yield stack.ahi
    stack.proxy.reset_next(0)
    stack.ahi.clear_faults()


def read_seg(seg_bytes: bytes) -> Any:
    import pydicom

    return pydicom.dcmread(io.BytesIO(seg_bytes))


def s3_bytes(moto: str, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return s3_client(moto).get_object(Bucket=bucket, Key=key)["Body"].read()


def original(response: dict[str, Any]) -> dict[str, Any]:
    """The container's JSON body inside a gateway ModelError."""
    assert response["Error"]["Code"] == "ModelError", response
    return json.loads(response["OriginalMessage"])

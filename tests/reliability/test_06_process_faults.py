"""Process faults: a worker killed mid-request, the gateway crashing and restarting, SIGTERM of ``serve``
during a request (last: it stops the container for good), then every process's log checked for PHI and
secrets.

A request in flight is made deterministic with a frame that hangs for a few seconds (shorter than the export
deadline), so the fault always lands while the request is inside the worker.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import psutil
import pytest

from devstack.clients import s3_client
from tests.container.conftest import http
from tests.reliability.conftest import BUCKET, PHI_ID, PHI_NAME, SECRET, Stack, original

HANG_S = 6.0
RESTART_WAIT_S = 180.0


class InFlight:
    """One InvokeEndpoint running in a thread; ``result()`` waits (bounded) for its outcome."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.outcome: dict[str, Any] = {}
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.outcome["value"] = call()
        except Exception as exc:  # inspected by the test
            self.outcome["error"] = exc
        self.outcome["seconds"] = time.monotonic() - self.started

    def result(self, timeout_s: float) -> dict[str, Any]:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"the request did not end within {timeout_s} s"
        return self.outcome


def _start_hanging_request(stack: Stack, case_name: str) -> tuple[InFlight, str]:
    case = stack.cases[case_name]
    frame = case.frame_ids[2]
    stack.ahi.faults(hang_frames=[frame], hang_seconds=HANG_S)
    flight = InFlight(lambda: stack.invoke(case.body()))
    stack.ahi.wait_log(f"hanging GetImageFrame {frame} for {HANG_S:.0f} s")
    return flight, frame


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return [] if proc.status() == psutil.STATUS_ZOMBIE else proc.cmdline()
    except psutil.Error:
        return []


def _workers(stack: Stack) -> list[psutil.Process]:
    name = stack.model_name()
    return [
        p
        for p in stack.container.tree()
        if "model_service_worker" in " ".join(_cmdline(p)) and name in _cmdline(p)
    ]


def _ready_workers(stack: Stack) -> list[dict[str, Any]]:
    status, _, body = http("GET", f"{stack.container.url}/models/{stack.model_name()}")
    assert status == 200, body
    return [w for w in json.loads(body)["workers"] if w["status"] == "READY"]


def _worker_serving(stack: Stack, frame: str) -> psutil.Process:
    """The worker whose connection carried the hanging GetImageFrame (seen by the proxy)."""
    peer = stack.proxy.peer_of(frame.encode())
    assert peer is not None
    for proc in _workers(stack):
        if any(c.laddr and c.laddr.port == peer[1] for c in proc.net_connections(kind="tcp")):
            return proc
    raise AssertionError(f"no worker owns the connection from port {peer[1]}")


def test_worker_killed_mid_request(stack: Stack, faults) -> None:
    stack.invoke(stack.cases["good0"].body())  # model loaded, workers warm
    before = {p.pid for p in _workers(stack)}
    flight, frame = _start_hanging_request(stack, "good1")
    victim = _worker_serving(stack, frame)
    victim_tree = [victim, *victim.children(recursive=True)]
    victim.kill()

    outcome = flight.result(60)
    error = outcome.get("error")
    assert isinstance(error, botocore.exceptions.ClientError), outcome
    assert error.response["Error"]["Code"] == "ModelError"
    assert error.response["OriginalStatusCode"] == 500
    assert "Worker died" in error.response["OriginalMessage"]
    assert outcome["seconds"] < 30, outcome["seconds"]
    _, alive = psutil.wait_procs(victim_tree, timeout=10)
    assert alive == [], [(p.pid, _cmdline(p)) for p in alive]

    faults.clear_faults()
    out = stack.invoke(stack.cases["good2"].body())  # the surviving (or restarted) worker serves it
    assert out["results"][0]["report"]["seriesInstanceUid"] == stack.cases["good2"].series_uid
    # The killed request's working directory went with the next request (its owner PID is gone).
    assert list(stack.work_dir.iterdir()) == []

    deadline = time.monotonic() + RESTART_WAIT_S  # MMS starts a replacement worker (it loads the model again)
    while len(_ready_workers(stack)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(_ready_workers(stack)) == 2
    after = {p.pid for p in _workers(stack)}
    assert victim.pid not in after and len(after) == len(before), (before, after)


def test_gateway_crash_and_restart(stack: Stack, faults) -> None:
    """SIGKILL the gateway while it waits on the container: the client gets a connection error, not a hang; a
    restarted gateway (same port) serves the already-loaded model without loading it again."""
    workers = {p.pid for p in _workers(stack)}
    flight, _ = _start_hanging_request(stack, "good3")
    stack.gateway.crash()
    outcome = flight.result(60)
    assert isinstance(
        outcome.get("error"), (botocore.exceptions.ConnectionError, botocore.exceptions.ClientError)
    )
    stack.gateway.start()
    faults.clear_faults()
    out = stack.invoke(stack.cases["good0"].body())
    assert out["results"][0]["status"] == "succeeded"
    assert "was already loaded in the container" in stack.gateway.log_text()
    assert {p.pid for p in _workers(stack)} == workers, "the container reloaded the model"
    deadline = (
        time.monotonic() + 30
    )  # the orphaned request finishes in the container and cleans up after itself
    while list(stack.work_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert list(stack.work_dir.iterdir()) == []


def test_async_request_survives_a_gateway_crash(stack: Stack, faults) -> None:
    """An accepted async request is journaled before the 202: a gateway killed mid-job resumes it on restart,
    and exactly one output or error object appears."""
    case = stack.cases["good2"]
    s3 = s3_client(stack.moto)
    s3.put_object(Bucket=BUCKET, Key="async-in/crash.json", Body=json.dumps(case.request()).encode())
    frame = case.frame_ids[3]
    faults.faults(hang_frames=[frame], hang_seconds=HANG_S)
    resp = stack.runtime().invoke_endpoint_async(
        EndpointName="spleen", InputLocation=f"s3://{BUCKET}/async-in/crash.json", InferenceId="rel-crash"
    )
    stack.ahi.wait_log(f"hanging GetImageFrame {frame}")
    stack.gateway.crash()
    stack.gateway.start()
    faults.clear_faults()
    keys = [resp["OutputLocation"], resp["FailureLocation"]]
    deadline = time.monotonic() + HANG_S + 20
    while time.monotonic() < deadline and not _existing(stack, keys):
        time.sleep(0.5)
    assert len(_existing(stack, keys)) == 1


def _existing(stack: Stack, uris: list[str]) -> list[str]:
    s3 = s3_client(stack.moto)
    found = []
    for uri in uris:
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        if s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0):
            found.append(uri)
    return found


def test_sigterm_of_serve_during_a_request(stack: Stack, faults) -> None:
    """Graceful: serve exits 0, the request in flight ends with an error (no hang), no process is left."""
    flight, _ = _start_hanging_request(stack, "good1")
    procs = stack.container.tree()
    assert any("com.amazonaws.ml.mms.ModelServer" in " ".join(p.cmdline()) for p in procs)
    assert len(_workers(stack)) >= 2
    stack.container.proc.terminate()
    assert stack.container.proc.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(procs, timeout=15)
    assert alive == [], [(p.pid, p.cmdline()[:3]) for p in alive]
    assert "serve stopped (exit code 0)" in stack.container.log_text()
    outcome = flight.result(60)
    error = outcome.get("error")
    assert isinstance(error, botocore.exceptions.ClientError), outcome
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] in (424, 503), error.response
    if error.response["Error"]["Code"] == "ModelError":
        assert original_status(error.response) >= 500
    else:
        assert "is not reachable" in error.response["Error"]["Message"]
    # The interrupted request's working directory (its worker was killed) is removed by the next server's
    # first invocation; here the same cleanup is called directly.
    from container.invocation import remove_orphaned_work_dirs

    remove_orphaned_work_dirs(stack.work_dir)
    assert list(stack.work_dir.iterdir()) == []


def original_status(response: dict[str, Any]) -> int:
    try:
        return int(original(response)["error"]["httpStatus"])
    except (ValueError, KeyError, TypeError):
        return int(response["OriginalStatusCode"])


@pytest.mark.parametrize("secret", [PHI_NAME, PHI_NAME.split("^")[0], PHI_ID, SECRET])
def test_logs_hold_no_phi_or_credentials(stack: Stack, secret: str) -> None:
    """Default log levels, after every request of this suite (good, bad, failed, killed)."""
    logs = {
        "container": stack.container.log_text(),
        "sagemaker-local": stack.gateway.log_text(),
        "ahi-local": stack.ahi.log_text(),
    }
    assert all(len(text) > 200 for text in logs.values()), {k: len(v) for k, v in logs.items()}
    leaked = [name for name, text in logs.items() if secret in text]
    assert leaked == [], f"{secret!r} appears in the {leaked} log(s)"

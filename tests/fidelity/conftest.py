"""Fixtures of the fidelity suite: an ahi-local whose start-up line is read back, the AWS CLI run in batches.

The AWS CLI (v1, ``awscli`` in the dev extra) starts slowly (about 1 s per process), so :func:`aws_cli` runs a
whole batch of commands through the CLI's own driver in one child process: each command is parsed,
serialised, sent and printed by the CLI exactly as ``aws ...`` would, only the interpreter start is shared.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from devstack.ahi_local.cli import serve_command
from devstack.clients import ahi_client
from devstack.processes import DUMMY_AWS_ENV, ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
TRANSITION_S = 0.3

_CLI_BATCH = r"""
import contextlib, io, json, sys
from awscli.clidriver import create_clidriver
results = []
driver = create_clidriver()
for argv in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = driver.main(argv)
        except SystemExit as exc:
            rc = exc.code
    results.append({"argv": argv, "rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.__stdout__.write(json.dumps(results))
"""


class CliResult(dict):
    @property
    def json(self) -> Any:
        return json.loads(self["stdout"]) if self["stdout"].strip() else None


def aws_cli(
    commands: Sequence[Sequence[str]], env: Mapping[str, str], timeout_s: float = 120
) -> list[CliResult]:
    """Run ``aws <command>`` for each command (``--output json`` added) in one CLI process; the results in
    order, each with ``rc``, ``stdout``, ``stderr`` and ``.json``."""
    argvs = [[*c, "--output", "json"] for c in commands]
    full_env = {**os.environ, **DUMMY_AWS_ENV, "AWS_MAX_ATTEMPTS": "1", "AWS_PAGER": "", **env}
    proc = subprocess.run(
        [sys.executable, "-c", _CLI_BATCH],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [CliResult(r) for r in json.loads(proc.stdout)]


def wait_datastore_active(ahi: Any, datastore_id: str, timeout_s: float = 30.0) -> None:
    """Poll GetDatastore until the datastore left CREATING (AWS creates datastores asynchronously)."""
    import time

    deadline = time.monotonic() + timeout_s
    while ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]["datastoreStatus"] != "ACTIVE":
        assert time.monotonic() < deadline, f"datastore {datastore_id} not ACTIVE after {timeout_s} s"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def fidelity_ahi(moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An ahi-local with a short LOCKED → ACTIVE transition, started like a user would start it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = serve_command(
        port,
        tmp_path_factory.mktemp("fidelity-ahi"),
        s3_endpoint_url=moto_s3,
        extra=["--transition-seconds", str(TRANSITION_S)],
    )
    with ServerProcess("ahi-local", argv, f"{url}/_local/health", url, env=DUMMY_AWS_ENV) as server:
        yield server


@pytest.fixture(scope="session")
def cli_env(fidelity_ahi: ServerProcess) -> dict[str, str]:
    """The environment ``ahi-local serve`` printed at start-up for clients (taken from its log line)."""
    match = re.search(r"clients \(aws CLI, boto3\) need: (.*)", fidelity_ahi.log_text())
    assert match, fidelity_ahi.tail()
    return dict(item.split("=", 1) for item in match.group(1).split())


@pytest.fixture(scope="session")
def ahi(fidelity_ahi: ServerProcess) -> Any:
    return ahi_client(fidelity_ahi.url, max_attempts=1)


SM_BUCKET = "fidelity-sagemaker"
ENDPOINT = "fidelity"
#: An async request the gateway accepted two hours before it (re)started, with the smallest TTL AWS allows.
EXPIRED_ID = "accepted-before-an-outage"


@pytest.fixture(scope="session")
def sagemaker_local(moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """sagemaker-local serving EndpointName ``fidelity`` over :mod:`tests.fidelity.container_double`, with
    async output on moto S3 and one journaled async request whose RequestTTLSeconds ran out while the gateway
    was down."""
    import tarfile
    import time

    from devstack.clients import s3_client
    from devstack.importing import ensure_bucket
    from devstack.sagemaker_local.cli import serve_command as gateway_command

    work = tmp_path_factory.mktemp("fidelity-sagemaker")
    models = work / "models-src"
    models.mkdir()
    (work / "model.txt").write_text("weights")
    with tarfile.open(models / "model.tar.gz", "w:gz") as tar:
        tar.add(work / "model.txt", arcname="model.txt")
    ensure_bucket(s3_client(moto_s3), SM_BUCKET)
    queue = work / "queue"
    queue.mkdir()
    (queue / f"{EXPIRED_ID}.json").write_text(json.dumps({
        "InferenceId": EXPIRED_ID,
        "InputLocation": f"s3://{SM_BUCKET}/in/never-read.json",
        "OutputLocation": f"s3://{SM_BUCKET}/async-out/{EXPIRED_ID}.out",
        "FailureLocation": f"s3://{SM_BUCKET}/async-failed/{EXPIRED_ID}-error.out",
        "Headers": {"Content-Type": "application/json"},
        "SubmittedAt": time.time() - 7200,
        "RequestTTLSeconds": 60,
        "InvocationTimeoutSeconds": 900,
    }))  # fmt: skip
    cport, gport = free_port(), free_port()
    container_url, url = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{gport}"
    container_argv = [sys.executable, "-m", "tests.fidelity.container_double", "--port", str(cport)]
    extra = [
        "--async-output", f"s3://{SM_BUCKET}/async-out", "--async-failure", f"s3://{SM_BUCKET}/async-failed",
        "--async-container-url", container_url, "--async-queue-dir", str(queue), "--log-level", "WARNING",
    ]  # fmt: skip
    argv = gateway_command(
        gport, container_url, models, endpoint_names=[ENDPOINT], models_dir=work / "models",
        s3_endpoint_url=moto_s3, extra=extra,
    )  # fmt: skip
    env = {**DUMMY_AWS_ENV, "PYTHONPATH": str(ROOT)}
    with ServerProcess("container-double", container_argv, f"{container_url}/ping", container_url, env=env):
        with ServerProcess("sagemaker-local", argv, f"{url}/_local/health", url, env=env):
            yield url

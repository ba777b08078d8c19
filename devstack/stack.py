"""The whole offline stack as child processes: moto S3, ``ahi-local``, ``container/serve`` and
``sagemaker-local``.

Used by ``make demo`` (``scripts/demo.py``) and ``scripts/bench_container.py``. Every process is started on
127.0.0.1 in its own session, waited for over HTTP, and stopped (SIGTERM, then SIGKILL after a grace period,
whole process tree) when the :class:`LocalStack` context exits, also on Ctrl-C and on errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from devstack.ahi_local.cli import serve_command as ahi_local_command
from devstack.clients import local_client
from devstack.processes import ServerProcess, free_port, moto_command
from devstack.sagemaker_local.cli import serve_command as gateway_command

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "container" / "serve"
LOCAL_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class LocalStack(contextlib.AbstractContextManager["LocalStack"]):
    """Start services one by one (:meth:`start_moto`, ...); everything started is stopped on exit."""

    def __init__(self, work_dir: Path | None = None, quiet: bool = True) -> None:
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="spleen-local-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[ServerProcess] = []
        self.env: dict[str, str] = {**os.environ, **LOCAL_AWS_ENV}
        self.quiet = quiet

    def _start(
        self,
        name: str,
        argv: Sequence[str],
        ready_url: str,
        url: str,
        timeout_s: float,
        env: Mapping[str, str] | None = None,
    ) -> ServerProcess:
        child = ServerProcess(
            name,
            argv,
            ready_url,
            url,
            env={**self.env, **(env or {})},
            log_path=self.work_dir / f"{name}.log",
            timeout_s=timeout_s,
        )
        self.children.append(child)
        return child

    def stop(self) -> None:
        """Stop every child, newest first (SIGTERM, then SIGKILL of its whole process tree)."""
        while self.children:
            self.children.pop().stop()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- the services
    # ---------------------------------------------------------------------------------------------
    def start_moto(self) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self._start(
            "moto-s3",
            moto_command(port),
            f"{url}/moto-api/",
            url,
            60,
        )
        self.env["AWS_ENDPOINT_URL_S3"] = url
        return url

    def start_ahi_local(self) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = ahi_local_command(
            port,
            self.work_dir / "ahi-data",
            s3_endpoint_url=self.env.get("AWS_ENDPOINT_URL_S3"),
            extra=["--log-level", "warning"],
        )
        self._start("ahi-local", argv, f"{url}/_local/health", url, 60)
        self.env["AWS_ENDPOINT_URL_MEDICAL_IMAGING"] = url
        self.env["AWS_DISABLE_HOST_PREFIX_INJECTION"] = "true"
        return url

    def start_serve(self, workers: int = 1, timeout_s: float = 180) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            "SAGEMAKER_MULTI_MODEL": "true",
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers),
        }
        self._start("serve", [str(SERVE)], f"{url}/ping", url, timeout_s, env)
        return url

    def start_gateway(
        self,
        container_url: str,
        model_data_url: str,
        endpoint_names: Sequence[str],
        async_output: str | None = None,
    ) -> str:
        """Start sagemaker-local serving ``endpoint_names`` (SageMaker answers any other name "not found")."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = gateway_command(
            port,
            container_url,
            model_data_url,
            endpoint_names=endpoint_names,
            models_dir=self.work_dir / "models",
            extra=["--log-level", "WARNING"],
        )
        if async_output:
            argv += ["--async-output", async_output]
        self._start("sagemaker-local", argv, f"{url}/_local/health", url, 60)
        return url

    def client(self, service: str, endpoint_url: str | None = None, read_timeout: float = 900) -> Any:
        """A boto3 client for a local service (the runtime client does not retry: invocations are not
        idempotent)."""
        if endpoint_url is None:
            endpoint_url = {
                "s3": self.env.get("AWS_ENDPOINT_URL_S3"),
                "medical-imaging": self.env.get("AWS_ENDPOINT_URL_MEDICAL_IMAGING"),
            }.get(service)
        attempts = 1 if service == "sagemaker-runtime" else 3
        return local_client(service, endpoint_url, attempts, read_timeout=read_timeout)

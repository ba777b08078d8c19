"""The one way to run a local server as a child process: start it, wait until it answers HTTP, stop it.

:class:`ServerProcess` starts a command in its own session with its output in a log file, polls a readiness
URL (any HTTP status below 500 counts; the process dying first fails at once with the log's tail) and stops
the whole process tree on exit: SIGTERM, a grace period, then SIGKILL. :func:`moto_s3_server` and
:func:`ahi_local_server` are the context managers the tests and benchmarks use;
:class:`devstack.stack.LocalStack` builds the demo stack from the same class.
"""

from __future__ import annotations

import contextlib
import logging
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
from types import TracebackType

import psutil

from devstack.ahi_local.cli import serve_command

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A TCP port on 127.0.0.1 in ``[low, high]`` that was free a moment ago.

    The default range stays below 32767, which multi-model-server 1.1.11 requires.
    """
    for _ in range(500):
        port = random.randint(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 in {low}..{high}")


class ServerProcess(contextlib.AbstractContextManager["ServerProcess"]):
    """A server started as a child process and waited for; leaving the context (or :meth:`stop`) stops it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        ready_url: str,
        url: str,
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.url = url
        self.log = log_path or Path(tempfile.mkdtemp(prefix=f"{name}-")) / f"{name}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log_file:
            self.proc = subprocess.Popen(
                list(argv),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        logger.info("started %s pid %d (log %s)", name, self.proc.pid, self.log)
        try:
            self._wait_ready(ready_url, timeout_s)
        except BaseException:
            self.stop()
            raise

    def tree(self) -> list[psutil.Process]:
        """The server process and all its descendants that are alive now."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def log_text(self) -> str:
        """The whole log of the server so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, limit: int = 4000) -> str:
        """The last ``limit`` characters of the server's log."""
        try:
            return self.log.read_text(errors="replace")[-limit:]
        except OSError:
            return "<no log>"

    def _wait_ready(self, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} ({self.proc.args!r}) exited with code {self.proc.returncode} before {url} "
                    f"answered; log tail:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status < 500:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return
                last_error = exc
            except (urllib.error.URLError, OSError) as exc:
                last_error = exc
            time.sleep(0.1)
        raise TimeoutError(
            f"{self.name} did not answer {url} within {timeout_s:.0f} s (last error: {last_error}); "
            f"log tail:\n{self.tail()}"
        )

    def stop(self) -> None:
        """SIGTERM the server, wait for the grace period, then SIGKILL what is left of its process tree."""
        tree = self.tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("%s pid %d ignored SIGTERM for %.0f s; killing it", self.name, self.proc.pid,
                               STOP_TIMEOUT_S)
        _, alive = psutil.wait_procs(tree, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        logger.info("stopped %s pid %d", self.name, self.proc.pid)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def moto_command(port: int) -> list[str]:
    """argv of a moto server (S3 and the other services moto emulates) on 127.0.0.1:``port``."""
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


@contextlib.contextmanager
def moto_s3_server(timeout_s: float = START_TIMEOUT_S) -> Iterator[str]:
    """Start ``python -m moto.server`` on a free port and yield its URL (``http://127.0.0.1:PORT``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ServerProcess("moto-s3", moto_command(port), f"{url}/moto-api/", url, env=DUMMY_AWS_ENV,
                       timeout_s=timeout_s):
        yield url


@contextlib.contextmanager
def ahi_local_server(
    data_dir: str | os.PathLike[str],
    s3_endpoint_url: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> Iterator[str]:
    """Start ``ahi-local serve`` on ``data_dir`` and yield its URL.

    Entering again with the same ``data_dir`` restarts the service on the same durable store (a new port
    unless ``port`` is given). ``extra_args`` passes fault-injection flags; ``env`` adds environment
    variables.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = serve_command(port, Path(data_dir), s3_endpoint_url=s3_endpoint_url, extra=extra_args)
    with ServerProcess("ahi-local", argv, f"{url}/_local/health", url, env={**DUMMY_AWS_ENV, **(env or {})},
                       timeout_s=timeout_s):
        yield url

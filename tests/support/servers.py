"""Real server processes for tests: a moto S3 server and the ``ahi-local`` service.

Both context managers start a separate process on a free 127.0.0.1 port, wait until it answers HTTP, yield its
base URL and stop it on exit (SIGTERM, then SIGKILL after a grace period). Server output goes to a log
file whose tail is put into the error when the process fails to start.
"""

from __future__ import annotations

import contextlib
import logging
import os
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

from ahi_connector.local.cli import serve_command

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(log_path: Path, limit: int = 4000) -> str:
    try:
        return log_path.read_text(errors="replace")[-limit:]
    except OSError:
        return "<no log>"


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    """Poll ``url`` until it answers with any HTTP status below 500; fail fast if the process dies."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server process {proc.args!r} exited with code {proc.returncode} before {url} answered; "
                f"log tail:\n{_log_tail(log_path)}"
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
        f"server {proc.args!r} did not answer {url} within {timeout_s:.0f} s (last error: {last_error}); "
        f"log tail:\n{_log_tail(log_path)}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        logger.warning("server pid %d ignored SIGTERM for %.0f s; killing it", proc.pid, STOP_TIMEOUT_S)
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def _process(
    argv: Sequence[str], ready_url: str, env: Mapping[str, str], log_name: str, timeout_s: float
) -> Iterator[Path]:
    log_dir = Path(tempfile.mkdtemp(prefix=f"{log_name}-"))
    log_path = log_dir / f"{log_name}.log"
    full_env = {**os.environ, **DUMMY_AWS_ENV, **env}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            list(argv), stdout=log_file, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    logger.info("started %s pid %d (log %s)", log_name, proc.pid, log_path)
    try:
        _wait_ready(ready_url, proc, log_path, timeout_s)
        yield log_path
    finally:
        _stop(proc)
        logger.info("stopped %s pid %d", log_name, proc.pid)


@contextlib.contextmanager
def moto_s3_server(timeout_s: float = START_TIMEOUT_S) -> Iterator[str]:
    """Start ``python -m moto.server`` on a free port and yield its URL (``http://127.0.0.1:PORT``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with _process(argv, f"{url}/moto-api/", {}, "moto-s3", timeout_s):
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

    Entering again with the same ``data_dir`` restarts the service on the same durable store (a new
    port unless ``port`` is given). ``extra_args`` passes fault-injection flags; ``env`` adds environment
    variables.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = serve_command(port, data_dir, s3_endpoint_url=s3_endpoint_url, extra=extra_args)
    with _process(argv, f"{url}/_local/health", dict(env or {}), "ahi-local", timeout_s):
        yield url

"""Start, watch and stop multi-model-server (MMS 1.1.11) with our own configuration.

Why not ``sagemaker_inference.model_server.start_model_server``: it writes ``/etc/sagemaker-mms.properties``,
binds ``0.0.0.0`` unconditionally, finds MMS by scanning every process on the machine, and only SIGTERMs the
launcher (which orphans Python workers). Here every MMS file (properties, log4j config, pid file, worker
sockets) lives in one runtime directory, the bind address comes from :class:`~container.settings.Settings`,
and :meth:`ModelServer.stop` stops Java and every Python worker by PID.

Process tree (MMS 1.1.11)::

    multi-model-server --foreground   (launcher, our child)
    └── java com.amazonaws.ml.mms.ModelServer
        └── python model_service_worker.py   (one "backend server" per model)
            └── python (forked)              (one per worker; loads the handler, serves requests)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from container.cuda_compat import library_path_with_compat
from container.settings import DEFAULT_HANDLER, LOAD_FAILURES_DIR, LOADED_DIR, RUNTIME_DIR_ENV, Settings

logger = logging.getLogger(__name__)

#: The single model name of single-model mode (what SageMaker's toolkit uses too).
SINGLE_MODEL_NAME = "model"
MAX_RESPONSE_SIZE = 16 * 1024 * 1024
STOP_GRACE_S = 10.0

LOG4J_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %t %c{1} - %m%n"/>
      <RegexFilter regex="^[{]&quot;_aws&quot;:.*" onMatch="DENY" onMismatch="NEUTRAL"/>
    </Console>
    <Console name="EMF" target="SYSTEM_OUT">
      <PatternLayout pattern="%m%n"/>
      <RegexFilter regex="^[{]&quot;_aws&quot;:.*" onMatch="ACCEPT" onMismatch="DENY"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="info" additivity="false"><AppenderRef ref="STDOUT"/></Logger>
    <Logger name="com.amazonaws.ml.mms" level="info" additivity="false">
      <AppenderRef ref="STDOUT"/><AppenderRef ref="EMF"/>
    </Logger>
    <Logger name="MODEL_LOG" level="info" additivity="false">
      <AppenderRef ref="STDOUT"/><AppenderRef ref="EMF"/>
    </Logger>
    <Logger name="MMS_METRICS" level="off"/>
    <Logger name="MODEL_METRICS" level="off"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Root level="warn"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""


class ModelServerError(RuntimeError):
    """MMS could not be started or stopped; the message says why and where its log is."""


def mms_properties(settings: Settings, model_dir: Path | None = None) -> dict[str, str]:
    """The MMS ``config.properties`` for ``settings`` (multi-model unless ``model_dir`` is given)."""
    address = f"http://{settings.host}:{settings.port}"
    props = {
        "inference_address": address,
        "management_address": address,
        # Absolute model URLs only: MMS resolves a URL as File(model_store, url), so the store must be "/".
        "model_store": "/",
        "load_models": f"{SINGLE_MODEL_NAME}={model_dir.resolve()}" if model_dir is not None else "",
        "default_service_handler": settings.handler,
        "default_workers_per_model": str(settings.worker_count),
        "number_of_gpu": str(settings.num_gpus),
        "default_response_timeout_seconds": str(settings.timeout_s),
        "unregister_model_timeout": str(max(settings.timeout_s, 120)),
        "max_request_size": str(settings.max_request_size),
        "max_response_size": str(MAX_RESPONSE_SIZE),
        "preload_model": "false",
        "decode_input_request": "false",
        "enable_envvars_config": "false",
        "async_logging": "true",
        "job_queue_size": "100",
        "vmargs": settings.vmargs,
    }
    return props


def render_properties(props: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in props.items())


def _http_json(url: str, timeout_s: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, body.decode(errors="replace")


def _launcher() -> str:
    local = Path(sys.executable).parent / "multi-model-server"
    if local.exists():
        return str(local)
    found = shutil.which("multi-model-server")
    if found is None:
        raise ModelServerError("multi-model-server is not installed; run scripts/install.sh")
    return found


class ModelServer:
    """One MMS instance configured from :class:`Settings`; files under ``runtime_dir``.

    ``model_dir`` selects single-model mode (``/invocations`` serves that model, loaded at start);
    ``None`` selects multi-model mode (models arrive through ``POST /models``).
    """

    def __init__(self, settings: Settings, runtime_dir: Path, model_dir: Path | None = None) -> None:
        self.settings = settings
        self.runtime_dir = Path(runtime_dir)
        self.model_dir = model_dir
        self.tmp_dir = self.runtime_dir / "tmp"
        self.config_path = self.runtime_dir / "mms.properties"
        self.log4j_path = self.runtime_dir / "log4j2.xml"
        self._launcher: subprocess.Popen[bytes] | None = None
        self._failures_logged = 0

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host
        return f"http://{host}:{self.settings.port}"

    @property
    def pid_file(self) -> Path:
        return self.tmp_dir / ".model_server.pid"

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # MMS puts its pid file in tempfile.gettempdir() (TMPDIR) and worker sockets in java.io.tmpdir (TEMP).
        env["TMPDIR"] = env["TEMP"] = str(self.tmp_dir)
        # Workers report a failed model load here (see load_failures()).
        env[RUNTIME_DIR_ENV] = str(self.runtime_dir)
        # MMS forces OMP_NUM_THREADS=1 in workers unless it is set: share the CPUs among the workers instead.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.settings.worker_count)))
        if self.settings.num_gpus:
            library_path = library_path_with_compat(env.get("LD_LIBRARY_PATH"))
            if library_path:
                env["LD_LIBRARY_PATH"] = library_path
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        if self.model_dir is not None:
            # The prebuilt-container layout: a model's code/ directory is importable (code/inference.py).
            code_dir = str((self.model_dir / "code").resolve())
            env["PYTHONPATH"] = code_dir + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def start(self) -> None:
        """Write the configuration and start MMS in the foreground of a child process (not yet ready)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        if self.pid_file.exists():
            self.pid_file.unlink()
        props = mms_properties(self.settings, self.model_dir)
        self.config_path.write_text(render_properties(props))
        self.log4j_path.write_text(LOG4J_TEMPLATE)
        argv = [
            _launcher(),
            "--start",
            "--foreground",
            "--mms-config",
            str(self.config_path),
            "--model-store",
            "/",
            "--log-config",
            str(self.log4j_path),
        ]
        logger.info(
            "starting MMS on %s (%s, %d worker(s) per model, %d GPU(s)); runtime dir %s",
            self.base_url,
            "multi-model" if self.model_dir is None else f"single model {self.model_dir}",
            self.settings.worker_count,
            self.settings.num_gpus,
            self.runtime_dir,
        )
        self._launcher = subprocess.Popen(argv, env=self._environment(), cwd=str(self.runtime_dir))

    def wait_ready(self, timeout_s: float | None = None, stop: threading.Event | None = None) -> bool:
        """Wait until ``/ping`` answers (and, in single-model mode, the model has a READY worker).

        Returns False if ``stop`` was set meanwhile; raises :class:`ModelServerError` on failure or timeout.
        """
        timeout_s = self.settings.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                return False
            if self._launcher is None or self._launcher.poll() is not None:
                code = None if self._launcher is None else self._launcher.returncode
                raise ModelServerError(f"MMS exited with code {code} during start-up; see its log above")
            failures = self.load_failures()
            if self.model_dir is not None and failures:
                # MMS would retry the load forever; a single-model container cannot serve without it.
                raise ModelServerError(f"the model in {self.model_dir} failed to load: {failures[0]}")
            if self._ready():
                logger.info("MMS ready on %s", self.base_url)
                return True
            time.sleep(0.2)
        raise ModelServerError(f"MMS not ready on {self.base_url} after {timeout_s:.0f} s")

    def _load_reports(self, folder_name: str) -> list[str]:
        folder = self.runtime_dir / folder_name
        if not folder.is_dir():
            return []
        return [p.read_text(errors="replace") for p in sorted(folder.iterdir()) if p.is_file()]

    def load_failures(self) -> list[str]:
        """Messages of model loads that failed in a worker (written by our handler service)."""
        return self._load_reports(LOAD_FAILURES_DIR)

    def log_new_load_failures(self) -> None:
        """Log each failed load once. MMS may drop a dying worker's last output lines (it stops reading its
        streams when the worker goes), so the reason is logged here too."""
        failures = self.load_failures()
        for message in failures[self._failures_logged :]:
            logger.error("a model failed to load (POST /models answered 500): %s", message)
        self._failures_logged = len(failures)

    def _ready(self) -> bool:
        try:
            status, _ = _http_json(f"{self.base_url}/ping")
            if status != 200:
                return False
            if self.model_dir is None:
                return True
            status, desc = _http_json(f"{self.base_url}/models/{SINGLE_MODEL_NAME}")
        except (urllib.error.URLError, OSError, ValueError):
            return False
        workers = desc.get("workers", []) if status == 200 and isinstance(desc, dict) else []
        if not any(w.get("status") == "READY" for w in workers):
            return False
        if self.settings.handler != DEFAULT_HANDLER:
            return True  # another handler service (e.g. sagemaker-inference's) does not report its loads
        # MMS shows a worker READY even while its load keeps failing: our handler reports real loads.
        return bool(self._load_reports(LOADED_DIR))

    def poll(self) -> int | None:
        """Exit code of the MMS launcher, or None while it runs."""
        return None if self._launcher is None else self._launcher.poll()

    def processes(self) -> list[psutil.Process]:
        """The launcher, Java and every Python backend/worker process of this MMS (launcher first)."""
        roots: list[psutil.Process] = []
        if self._launcher is not None:
            try:
                roots.append(psutil.Process(self._launcher.pid))
            except psutil.NoSuchProcess:
                pass
        try:
            java_pid = int(self.pid_file.read_text().strip())
            roots.append(psutil.Process(java_pid))
        except (OSError, ValueError, psutil.NoSuchProcess):
            pass
        seen: dict[int, psutil.Process] = {}
        for root in roots:
            for proc in [root, *root.children(recursive=True)]:
                seen.setdefault(proc.pid, proc)
        # Backend workers that MMS detached (e.g. after a failed load) are re-parented to init; they are still
        # ours:
        # their command line names a socket in this server's private temporary directory.
        marker = str(self.tmp_dir) + os.sep
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = proc.info.get("cmdline") or []
            if proc.pid not in seen and any(marker in arg for arg in cmdline):
                seen[proc.pid] = proc
        return list(seen.values())

    def reap_orphans(self) -> list[int]:
        """Kill this server's Python workers that MMS abandoned (re-parented to init; seen after a 507 load).

        Live MMS processes are never children of init: backend servers are Java's children and request workers
        their children. Returns the PIDs killed.
        """
        java = {p.pid for p in self.processes() if _is_java(p)}
        killed = []
        for proc in self.processes():
            try:
                if proc.pid in java or (self._launcher is not None and proc.pid == self._launcher.pid):
                    continue
                if proc.ppid() == 1:
                    logger.warning(
                        "killing orphaned MMS worker pid %d (%s)", proc.pid, " ".join(proc.cmdline()[-6:])
                    )
                    proc.kill()
                    killed.append(proc.pid)
            except psutil.NoSuchProcess:
                continue
        return killed

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop Java and every Python worker by PID: SIGTERM, wait, then SIGKILL what is left. Idempotent."""
        procs = self.processes()
        if not procs:
            return
        logger.info("stopping MMS: pids %s", sorted(p.pid for p in procs))
        java = [p for p in procs if _is_java(p)]
        others = [p for p in procs if p not in java]
        # Java first (its shutdown closes the worker sockets), then the Python side. Workers ignore SIGTERM in
        # MMS 1.1.11 (their handler only removes files), so whatever survives the grace period is killed.
        for proc in java + others:
            _signal(proc, "terminate")
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        late = [p for p in self.processes() if p not in procs]
        for proc in alive + late:
            logger.warning("MMS process %d still alive after %.0f s; killing it", proc.pid, grace_s)
            _signal(proc, "kill")
        psutil.wait_procs(alive + late, timeout=grace_s)
        if self._launcher is not None:
            try:
                self._launcher.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                logger.error("MMS launcher pid %d did not exit", self._launcher.pid)
        try:
            self.pid_file.unlink()
        except OSError:
            pass


def _is_java(proc: psutil.Process) -> bool:
    try:
        return "com.amazonaws.ml.mms.ModelServer" in proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _signal(proc: psutil.Process, action: str) -> None:
    try:
        getattr(proc, action)()
    except psutil.NoSuchProcess:
        pass

"""Container settings: every environment variable the container reads, named once, parsed once.

SageMaker configures a serving container through environment variables (``SAGEMAKER_*``); the project adds a
few ``SPLEEN_*`` knobs of its own. :meth:`Settings.from_env` parses them into a frozen, typed object at
start-up; nothing else in ``container/`` reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

# --- SageMaker's names (sagemaker-inference toolkit / platform contract)
# -------------------------------------------
MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"
BIND_TO_PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
MODEL_SERVER_WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
MODEL_SERVER_TIMEOUT_SECONDS_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"
#: Legacy; the sagemaker-inference toolkit hands it to MMS, which reads it as *minutes*: so do we.
MODEL_SERVER_TIMEOUT_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
MAX_REQUEST_SIZE_ENV = "SAGEMAKER_MAX_REQUEST_SIZE"  # bytes
MAX_PAYLOAD_IN_MB_ENV = "SAGEMAKER_MAX_PAYLOAD_IN_MB"  # the toolkit's name, megabytes
STARTUP_TIMEOUT_ENV = "SAGEMAKER_STARTUP_TIMEOUT"
BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
HANDLER_ENV = "SAGEMAKER_HANDLER"
VMARGS_ENV = "SAGEMAKER_MODEL_SERVER_VMARGS"
# --- ours
# -----------------------------------------------------------------------------------------------------------
BIND_HOST_ENV = "SPLEEN_BIND_HOST"  # 127.0.0.1 on a host; the Dockerfile sets 0.0.0.0
RUNTIME_DIR_ENV = "SPLEEN_RUNTIME_DIR"  # MMS config, pid file, sockets, logs
#: Sub-folder of the runtime dir where workers leave one file per failed model load.
LOAD_FAILURES_DIR = "load-failures"
#: ... and one file per successful model load (single-model readiness: MMS reports READY even while it fails).
LOADED_DIR = "loaded"
WORK_DIR_ENV = "SPLEEN_WORK_DIR"  # parent of the per-request working directories
NUM_GPUS_ENV = "SPLEEN_NUM_GPUS"  # override GPU detection (0 forces CPU)
MODEL_MEMORY_OVERHEAD_MB_ENV = "SPLEEN_MODEL_MEMORY_OVERHEAD_MB"
INLINE_SEG_MAX_BYTES_ENV = "SPLEEN_INLINE_SEG_MAX_BYTES"
OUTPUT_S3_URI_ENV = "SPLEEN_OUTPUT_S3_URI"  # default output.s3Uri when a request names none

DEFAULT_PORT = 8080
#: multi-model-server 1.1.11 rejects ports >= Short.MAX_VALUE (32767).
MAX_PORT = 32767
DEFAULT_TIMEOUT_S = 600
DEFAULT_STARTUP_TIMEOUT_S = 600
#: SageMaker real-time InvokeEndpoint limit for the request and for the response payload: 6 MB. The one place
#: this number lives (the local gateway enforces it too).
REALTIME_PAYLOAD_LIMIT = 6 * 1024 * 1024
#: MMS's request limit: the payload limit plus room for MMS's own framing of the request.
DEFAULT_MAX_REQUEST_SIZE = REALTIME_PAYLOAD_LIMIT + 256 * 1024
#: Base64 SEG bytes returned inline must fit in the response together with the JSON around them.
DEFAULT_INLINE_SEG_MAX_BYTES = REALTIME_PAYLOAD_LIMIT - 256 * 1024
#: Resident memory one worker needs besides the model files (MONAI Deploy SDK + holoscan ≈ 600 MB measured).
DEFAULT_MODEL_MEMORY_OVERHEAD_MB = 1024
DEFAULT_HANDLER = "container.handler_service"
DEFAULT_VMARGS = "-XX:-UseContainerSupport -Xmx1g"


class SettingsError(ValueError):
    """An environment variable has a value the container cannot use; the message names it and the fix."""


def _int(env: Mapping[str, str], name: str, default: int | None, minimum: int = 0) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(
            f"{name}={raw!r} is not an integer; set it to a whole number or unset it"
        ) from exc
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise SettingsError(f"{name}={raw!r} is not a boolean; use 'true' or 'false'")


def detect_gpus(env: Mapping[str, str]) -> int:
    """GPUs to use: ``SPLEEN_NUM_GPUS`` if set, else those ``nvidia-smi -L`` lists, else 0."""
    forced = _int(env, NUM_GPUS_ENV, None)
    if forced is not None:
        return forced
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Typed snapshot of the container's environment (see the ``*_ENV`` constants for the variable names)."""

    multi_model: bool = True
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int | None = None
    timeout_s: int = DEFAULT_TIMEOUT_S
    startup_timeout_s: int = DEFAULT_STARTUP_TIMEOUT_S
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    base_dir: Path = Path("/opt/ml")
    handler: str = DEFAULT_HANDLER
    vmargs: str = DEFAULT_VMARGS
    runtime_dir: Path | None = None
    work_dir: Path | None = None
    num_gpus: int = 0
    model_memory_overhead_mb: int = DEFAULT_MODEL_MEMORY_OVERHEAD_MB
    inline_seg_max_bytes: int = DEFAULT_INLINE_SEG_MAX_BYTES
    output_s3_uri: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < MAX_PORT:
            raise SettingsError(
                f"{BIND_TO_PORT_ENV}={self.port}: multi-model-server 1.1.11 only accepts ports "
                f"1..{MAX_PORT - 1}"
            )
        if self.workers is not None and self.workers < 1:
            raise SettingsError(f"{MODEL_SERVER_WORKERS_ENV}={self.workers}: need at least one worker")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, detect_gpu: bool = True) -> Settings:
        """Parse ``env`` (default ``os.environ``) once; raises :class:`SettingsError` naming a bad variable.

        ``detect_gpu=False`` skips GPU detection (model workers get their GPU from MMS instead).
        """
        env = os.environ if env is None else env
        timeout = _int(env, MODEL_SERVER_TIMEOUT_SECONDS_ENV, None, 1)
        if timeout is None:
            minutes = _int(env, MODEL_SERVER_TIMEOUT_ENV, None, 1)
            timeout = minutes * 60 if minutes is not None else DEFAULT_TIMEOUT_S
        max_request = _int(env, MAX_REQUEST_SIZE_ENV, None, 1)
        if max_request is None:
            payload_mb = _int(env, MAX_PAYLOAD_IN_MB_ENV, None, 1)
            max_request = payload_mb * 1024 * 1024 if payload_mb else DEFAULT_MAX_REQUEST_SIZE
        runtime_dir = env.get(RUNTIME_DIR_ENV, "").strip()
        work_dir = env.get(WORK_DIR_ENV, "").strip()
        return cls(
            multi_model=_bool(env, MULTI_MODEL_ENV),
            host=env.get(BIND_HOST_ENV, "").strip() or "127.0.0.1",
            port=_int(env, BIND_TO_PORT_ENV, DEFAULT_PORT, 1),  # type: ignore[arg-type]
            workers=_int(env, MODEL_SERVER_WORKERS_ENV, None, 1),
            timeout_s=timeout,
            startup_timeout_s=_int(env, STARTUP_TIMEOUT_ENV, DEFAULT_STARTUP_TIMEOUT_S, 1),  # type: ignore[arg-type]
            max_request_size=max_request,
            base_dir=Path(env.get(BASE_DIR_ENV, "").strip() or "/opt/ml"),
            handler=env.get(HANDLER_ENV, "").strip() or DEFAULT_HANDLER,
            vmargs=env.get(VMARGS_ENV, "").strip() or DEFAULT_VMARGS,
            runtime_dir=Path(runtime_dir) if runtime_dir else None,
            work_dir=Path(work_dir) if work_dir else None,
            num_gpus=detect_gpus(env) if detect_gpu else 0,
            model_memory_overhead_mb=_int(  # type: ignore[arg-type]
                env, MODEL_MEMORY_OVERHEAD_MB_ENV, DEFAULT_MODEL_MEMORY_OVERHEAD_MB
            ),
            inline_seg_max_bytes=_int(  # type: ignore[arg-type]
                env, INLINE_SEG_MAX_BYTES_ENV, DEFAULT_INLINE_SEG_MAX_BYTES
            ),
            output_s3_uri=env.get(OUTPUT_S3_URI_ENV, "").strip() or None,
        )

    @property
    def model_dir(self) -> Path:
        """Single-model mode: where SageMaker extracted model.tar.gz (``<base>/model``)."""
        return self.base_dir / "model"

    @property
    def worker_count(self) -> int:
        """Workers per model: the configured number, else one per GPU, else one (CPU)."""
        if self.workers is not None:
            return self.workers
        return max(self.num_gpus, 1)

    def request_work_root(self) -> Path:
        """Parent directory of per-request working directories."""
        return self.work_dir or Path(tempfile.gettempdir())

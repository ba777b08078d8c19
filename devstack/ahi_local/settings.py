"""Start-up settings of ``ahi-local serve``: parsed once, frozen. Environment variable names live here."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from .faults import FaultSettings

ENV_THROTTLE_RATE = "AHI_LOCAL_THROTTLE_RATE"
ENV_ERROR_RATE = "AHI_LOCAL_ERROR_RATE"
ENV_LATENCY_MS = "AHI_LOCAL_LATENCY_MS"
ENV_CORRUPT_RATE = "AHI_LOCAL_CORRUPT_RATE"
ENV_FAIL_FRAMES = "AHI_LOCAL_FAIL_FRAMES"
ENV_HANG_FRAMES = "AHI_LOCAL_HANG_FRAMES"
ENV_CORRUPT_FRAMES = "AHI_LOCAL_CORRUPT_FRAMES"
ENV_FAULT_OPERATIONS = "AHI_LOCAL_FAULT_OPERATIONS"
ENV_HANG_SECONDS = "AHI_LOCAL_HANG_SECONDS"
ENV_FAULT_SEED = "AHI_LOCAL_FAULT_SEED"
ENV_S3_ENDPOINT_URL = "AHI_LOCAL_S3_ENDPOINT_URL"
ENV_IMPORT_WORKERS = "AHI_LOCAL_IMPORT_WORKERS"
ENV_LOCK_WAIT_S = "AHI_LOCAL_LOCK_WAIT_S"

FAULT_ENV = {
    "throttle_rate": ENV_THROTTLE_RATE,
    "error_rate": ENV_ERROR_RATE,
    "latency_ms": ENV_LATENCY_MS,
    "corrupt_rate": ENV_CORRUPT_RATE,
    "fail_frames": ENV_FAIL_FRAMES,
    "hang_frames": ENV_HANG_FRAMES,
    "corrupt_frames": ENV_CORRUPT_FRAMES,
    "operations": ENV_FAULT_OPERATIONS,
    "hang_seconds": ENV_HANG_SECONDS,
    "seed": ENV_FAULT_SEED,
}
LIST_FIELDS = ("fail_frames", "hang_frames", "corrupt_frames", "operations")


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    host: str
    port: int
    data_dir: Path
    s3_endpoint_url: str | None
    import_workers: int
    faults: FaultSettings
    log_level: str = "info"
    lock_wait_s: float = 15.0


def faults_from_env(environ: Mapping[str, str]) -> dict[str, object]:
    """Fault settings given in the environment (comma-separated lists for the frame ID sets)."""
    values: dict[str, object] = {}
    for field, name in FAULT_ENV.items():
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        values[field] = [v.strip() for v in raw.split(",") if v.strip()] if field in LIST_FIELDS else raw
    return values


def default_environ() -> Mapping[str, str]:
    return os.environ

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
ENV_ENABLE_FAULTS = "AHI_LOCAL_ENABLE_FAULTS"
#: Seconds a request body may stay silent before the request is answered 408 (three times that in all).
ENV_BODY_TIMEOUT_S = "AHI_LOCAL_BODY_TIMEOUT_S"
#: The credentials SigV4 requests are verified against (default: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
ENV_ACCESS_KEY_ID = "AHI_LOCAL_ACCESS_KEY_ID"
ENV_SECRET_ACCESS_KEY = "AHI_LOCAL_SECRET_ACCESS_KEY"
ENV_TRANSITION_S = "AHI_LOCAL_TRANSITION_SECONDS"
ENV_CREATE_S = "AHI_LOCAL_DATASTORE_CREATION_SECONDS"
ENV_REGION = "AHI_LOCAL_REGION"
ENV_ACCOUNT_ID = "AHI_LOCAL_ACCOUNT_ID"
DEFAULT_TRANSITION_S = 0.5
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "123456789012"

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
    transition_s: float = DEFAULT_TRANSITION_S
    datastore_creation_s: float = DEFAULT_TRANSITION_S
    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    #: ``/_local/faults`` answers only when fault injection was enabled at start (``--enable-faults`` or
    #: fault flags / variables); otherwise it is 404 and no fault can be switched on.
    enable_faults: bool = False
    #: access key ID → secret; requests must be SigV4-signed with one of them (None: no authentication).
    credentials: tuple[tuple[str, str], ...] | None = None
    body_timeout_s: float = 10.0


def configured_credentials(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...] | None:
    """The one key pair SigV4 requests are checked against: AHI_LOCAL_ACCESS_KEY_ID / _SECRET_ACCESS_KEY, else
    the standard AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the server's environment."""
    for key_name, secret_name in (
        (ENV_ACCESS_KEY_ID, ENV_SECRET_ACCESS_KEY),
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ):
        key, secret = environ.get(key_name, "").strip(), environ.get(secret_name, "").strip()
        if key and secret:
            return ((key, secret),)
    return None


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

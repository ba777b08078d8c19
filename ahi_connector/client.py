"""boto3 ``medical-imaging`` client factory.

Credentials come only from the default boto3 chain (environment, profile, SSO, instance/role, STS session
tokens) or from an explicit ``boto3.Session``. The endpoint comes from ``endpoint_url`` or the standard
``AWS_ENDPOINT_URL_MEDICAL_IMAGING`` variable; against a non-AWS endpoint host-prefix injection (``runtime-``)
is off.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import boto3
from botocore.config import Config

from .errors import AHIConfigError

log = logging.getLogger(__name__)

ENV_ENDPOINT = "AWS_ENDPOINT_URL_MEDICAL_IMAGING"
ENV_DISABLE_HOST_PREFIX = "AWS_DISABLE_HOST_PREFIX_INJECTION"
RETRY_MODES = ("standard", "adaptive")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def make_ahi_client(
    endpoint_url: str | None = None,
    region_name: str | None = None,
    session: boto3.session.Session | None = None,
    max_pool_connections: int = 64,
    *,
    retry_mode: str = "standard",
    max_attempts: int = 4,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
) -> Any:
    """Build a botocore ``medical-imaging`` client.

    ``max_attempts`` is the total number of tries per call (botocore ``total_max_attempts``). ``retry_mode``
    is botocore's ``standard`` (default; retries throttling, 5xx and connection errors with exponential
    backoff) or ``adaptive`` (adds client-side rate limiting). Timeouts bound every call so that a dead
    endpoint or a credential provider that never answers cannot hang the caller.
    """
    if retry_mode not in RETRY_MODES:
        raise AHIConfigError(f"retry_mode={retry_mode!r} is not one of {RETRY_MODES}")
    if max_pool_connections < 1:
        raise AHIConfigError(f"max_pool_connections must be >= 1, got {max_pool_connections}")
    endpoint_url = endpoint_url or os.environ.get(ENV_ENDPOINT) or None
    inject_host_prefix = not (endpoint_url or _env_flag(ENV_DISABLE_HOST_PREFIX))
    config = Config(
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        inject_host_prefix=inject_host_prefix,
        tcp_keepalive=True,
    )
    session = session or boto3.session.Session()
    region = region_name or session.region_name or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    log.debug(
        "medical-imaging client: endpoint=%s region=%s host_prefix=%s",
        endpoint_url,
        region,
        inject_host_prefix,
    )
    return session.client("medical-imaging", endpoint_url=endpoint_url, region_name=region, config=config)


def client_from_keys(
    aws_access_key: str | None,
    aws_secret_key: str | None,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    aws_session_token: str | None = None,
) -> Any:
    """Convenience for callers holding explicit keys (the AHItoDICOM compat constructor): both or neither."""
    if bool(aws_access_key) != bool(aws_secret_key):
        raise AHIConfigError(
            "pass both aws_access_key and aws_secret_key, or neither (to use the default chain)"
        )
    session = None
    if aws_access_key:
        session = boto3.session.Session(
            aws_access_key_id=aws_access_key,
            aws_secret_access_key=aws_secret_key,
            aws_session_token=aws_session_token,
            region_name=region_name,
        )
    return make_ahi_client(endpoint_url=endpoint_url, region_name=region_name, session=session)

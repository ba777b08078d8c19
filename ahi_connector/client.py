"""The one boto3 client factory of the project.

Credentials come only from the default boto3 chain (environment, profile, SSO, instance/role, STS session
tokens) or from an explicit ``boto3.Session``. The endpoint comes from ``endpoint_url`` or the standard
``AWS_ENDPOINT_URL_<SERVICE>`` / ``AWS_ENDPOINT_URL`` variables. Against a non-AWS endpoint (``ahi-local``, a
moto server) host-prefix injection (``runtime-``) is off and S3 uses path-style addressing. Every client has
bounded retries and timeouts, so a dead endpoint or a credential provider that never answers cannot hang the
caller.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
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


def configured_endpoint(service: str, endpoint_url: str | None = None) -> str | None:
    """The endpoint for ``service``: explicit, else ``AWS_ENDPOINT_URL_<SERVICE>``, else ``AWS_ENDPOINT_URL``.
    """
    env_name = "AWS_ENDPOINT_URL_" + service.upper().replace("-", "_")
    return endpoint_url or os.environ.get(env_name) or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client(
    service: str,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    session: boto3.session.Session | None = None,
    *,
    max_pool_connections: int = 10,
    retry_mode: str = "standard",
    max_attempts: int = 4,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
) -> Any:
    """Build a boto3 client for ``service`` with retries, timeouts and local-endpoint settings.

    ``max_attempts`` is the total number of tries per call (botocore ``total_max_attempts``). ``retry_mode``
    is botocore's ``standard`` (retries throttling, 5xx and connection errors with exponential backoff) or
    ``adaptive`` (adds client-side rate limiting).
    """
    if retry_mode not in RETRY_MODES:
        raise AHIConfigError(f"retry_mode={retry_mode!r} is not one of {RETRY_MODES}")
    if max_pool_connections < 1:
        raise AHIConfigError(f"max_pool_connections must be >= 1, got {max_pool_connections}")
    if max_attempts < 1:
        raise AHIConfigError(f"max_attempts must be >= 1, got {max_attempts}")
    endpoint_url = configured_endpoint(service, endpoint_url)
    host = urllib.parse.urlsplit(endpoint_url).hostname or "" if endpoint_url else ""
    local = bool(endpoint_url) and not host.endswith((".amazonaws.com", ".amazonaws.com.cn", ".api.aws"))
    # An explicit endpoint is used as given: botocore must not prepend "runtime-" to it.
    inject_host_prefix = not (endpoint_url or _env_flag(ENV_DISABLE_HOST_PREFIX))
    config = Config(
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        inject_host_prefix=inject_host_prefix,
        tcp_keepalive=True,
        s3={"addressing_style": "path"} if local and service == "s3" else None,
    )
    session = session or boto3.session.Session()
    region = region_name or session.region_name or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    log.debug(
        "%s client: endpoint=%s region=%s host_prefix=%s", service, endpoint_url, region, inject_host_prefix
    )
    return session.client(service, endpoint_url=endpoint_url, region_name=region, config=config)


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
    """A ``medical-imaging`` client (:func:`make_client` with a pool sized for parallel frame fetches)."""
    return make_client(
        "medical-imaging",
        endpoint_url,
        region_name,
        session,
        max_pool_connections=max_pool_connections,
        retry_mode=retry_mode,
        max_attempts=max_attempts,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


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

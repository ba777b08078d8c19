"""boto3 clients for the local services, as CONTRIBUTING.md asks: endpoint_url, retries, no host prefix."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

REGION = "us-east-1"
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def ahi_client(url: str, max_attempts: int = 3, max_pool_connections: int = 32) -> Any:
    """A ``medical-imaging`` client talking to an ``ahi-local`` server at ``url``."""
    config = Config(
        inject_host_prefix=False,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=max_pool_connections,
    )
    return boto3.client(
        "medical-imaging", endpoint_url=url, region_name=REGION, config=config, **DUMMY_CREDENTIALS
    )


def s3_client(url: str) -> Any:
    """An S3 client talking to a moto server at ``url`` (path-style addressing)."""
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=url, region_name=REGION, config=config, **DUMMY_CREDENTIALS)

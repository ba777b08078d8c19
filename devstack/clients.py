"""boto3 clients for the local services, built by the product's one client factory with dummy credentials."""

from __future__ import annotations

import threading
from typing import Any

import boto3

from ahi_connector.client import make_client

REGION = "us-east-1"
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


_SESSION = boto3.session.Session(region_name=REGION, **DUMMY_CREDENTIALS)
_SESSION_LOCK = threading.Lock()  # a boto3 Session is not safe for concurrent client creation


def local_client(service: str, url: str | None, max_attempts: int = 3, **options: Any) -> Any:
    """A ``service`` client for a local endpoint at ``url`` (no host prefix, path-style S3, dummy keys).

    All clients come from one session, so their modelled exceptions (``client.exceptions.NoSuchKey``) are the
    same classes whichever client raised them.
    """
    with _SESSION_LOCK:
        return make_client(service, endpoint_url=url, session=_SESSION, max_attempts=max_attempts, **options)


def ahi_client(url: str, max_attempts: int = 3, max_pool_connections: int = 32) -> Any:
    """A ``medical-imaging`` client talking to an ``ahi-local`` server at ``url``."""
    return local_client("medical-imaging", url, max_attempts, max_pool_connections=max_pool_connections)


def dicomweb_client(url: str) -> Any:
    """An ``ahi_connector`` DICOMweb client for an ``ahi-local`` server at ``url`` (SigV4, dummy keys)."""
    import boto3.session

    from ahi_connector.dicomweb import DicomWebClient

    return DicomWebClient(url, REGION, boto3.session.Session(**DUMMY_CREDENTIALS, region_name=REGION))


def s3_client(url: str) -> Any:
    """An S3 client talking to a moto server at ``url`` (path-style addressing)."""
    return local_client("s3", url)

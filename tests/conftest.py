"""Shared fixtures: real moto S3 and ahi-local server processes (session-scoped), and client helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.clients import ahi_client, s3_client
from devstack.processes import ahi_local_server, moto_s3_server

__all__ = ["ahi_client", "s3_client"]


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """URL of a moto S3 server shared by the whole session."""
    with moto_s3_server() as url:
        yield url


@pytest.fixture(scope="session")
def ahi_local_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ahi-local-data")


@pytest.fixture(scope="session")
def ahi_local(moto_s3: str, ahi_local_data_dir: Path) -> Iterator[str]:
    """URL of an ahi-local server reading imports from the session's moto S3; shared by the session."""
    with ahi_local_server(ahi_local_data_dir, s3_endpoint_url=moto_s3) as url:
        yield url

"""Shared fixtures: real moto S3 and ahi-local server processes (session-scoped), and client helpers; and the
pytest-xdist scheduling that ``make test`` uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.clients import ahi_client, s3_client
from devstack.processes import ahi_local_server, moto_s3_server

__all__ = ["ahi_client", "s3_client"]

# Packages whose tests share one package-scoped stack and run in file order (tests/reliability: the last
# file stops the container for good). Under pytest-xdist each is one work unit, so one worker runs it whole.
IN_ORDER_PACKAGES = ("tests/reliability/",)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadfile``, except that each of :data:`IN_ORDER_PACKAGES` is a single unit (its files in
    collection order). Largest units still go first. Other ``--dist`` modes keep xdist's own scheduler."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FileOrOrderedPackage(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            for package in IN_ORDER_PACKAGES:
                if nodeid.startswith(package):
                    return package
            return str(super()._split_scope(nodeid))

    return FileOrOrderedPackage(config, log)


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

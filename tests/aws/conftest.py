"""Fixtures for the ``ahi-spleen`` CLI tests.

One real moto server process (all AWS services) for this package, reset before every test, and a helper that
runs the CLI in-process against it and parses its JSON output."""

from __future__ import annotations

import json
import tarfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from devstack.processes import DUMMY_AWS_ENV, moto_s3_server
from scripts.aws import cli

REGION = "us-east-1"
BUCKET = "spleen-test-bucket"


@pytest.fixture(scope="session")
def aws_moto() -> Iterator[str]:
    """URL of a moto server used only by tests/aws (so resetting it never disturbs other test packages)."""
    with moto_s3_server() as url:
        yield url


@pytest.fixture(autouse=True)
def aws_env(aws_moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Fresh moto state, dummy credentials, and a per-test state directory."""
    request = urllib.request.Request(f"{aws_moto}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
    for key, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AHI_SPLEEN_STATE_DIR", str(tmp_path / "state"))
    return aws_moto


@pytest.fixture
def client(aws_moto: str) -> Callable[[str], Any]:
    """boto3 client factory for the moto server (to check what the CLI did, independently of its code)."""

    def make(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=aws_moto,
            region_name=REGION,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )

    return make


@pytest.fixture
def ahi_spleen(aws_moto: str) -> Callable[..., dict[str, Any]]:
    """Run ``ahi-spleen <argv> --endpoint-url <moto>`` in-process; return its parsed JSON output."""

    def run(*argv: str, expect_code: int = 0) -> dict[str, Any]:
        full = [*argv, "--endpoint-url", aws_moto, "--region", REGION, "--no-progress"]
        code, text = cli.run(full)
        assert code == expect_code, text
        return dict(json.loads(text))

    return run


@pytest.fixture
def small_archive(tmp_path: Path) -> Path:
    """A small model.tar.gz with the contract's bundle layout (for tests that only need the S3 object)."""
    src = tmp_path / "bundle-src"
    files = {
        "spleen_ct_segmentation/configs/metadata.json": b'{"name": "spleen"}',
        "spleen_ct_segmentation/configs/inference.json": b"{}",
        "spleen_ct_segmentation/models/model.ts": b"not a real model",
    }
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in files.items():
            path = src / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            tar.add(path, arcname=name)
    return archive

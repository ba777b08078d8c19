"""Client factory and credentials: clear errors, never a hang; the package imports light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ahi_connector import AHIConfigError, AHICredentialsError, ImageSetExporter, make_ahi_client
from ahi_connector.client import client_from_keys


def test_endpoint_disables_host_prefix_and_sets_retries(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", raising=False)
    client = make_ahi_client("http://127.0.0.1:9", region_name="eu-west-1", max_pool_connections=7)
    cfg = client.meta.config
    assert cfg.inject_host_prefix is False and cfg.max_pool_connections == 7
    assert cfg.retries == {"mode": "standard", "total_max_attempts": 4}
    assert client.meta.endpoint_url == "http://127.0.0.1:9" and client.meta.region_name == "eu-west-1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", "http://127.0.0.1:10")
    assert make_ahi_client().meta.config.inject_host_prefix is False
    monkeypatch.delenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING")
    assert make_ahi_client(region_name="us-east-1").meta.config.inject_host_prefix is True
    monkeypatch.setenv("AWS_DISABLE_HOST_PREFIX_INJECTION", "true")
    assert make_ahi_client(region_name="us-east-1").meta.config.inject_host_prefix is False


def test_bad_arguments():
    with pytest.raises(AHIConfigError, match=r"retry_mode='legacy' is not one of"):
        make_ahi_client(retry_mode="legacy")
    with pytest.raises(AHIConfigError, match=r"pass both aws_access_key and aws_secret_key, or neither"):
        client_from_keys("AKIA...", None)


def test_no_credentials_is_a_clear_error_not_a_hang(monkeypatch, tmp_path, ahi_local):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with ImageSetExporter(make_ahi_client(ahi_local, region_name="us-east-1")) as ex:
        with pytest.raises(AHICredentialsError, match=r"image set a+ .*no AWS credentials found"):
            ex.get_metadata("d" * 32, "a" * 32)


def test_package_import_is_light():
    code = (
        "import sys, ahi_connector; from ahi_connector import ImageSetExporter, AHItoDICOM;"
        "print(sorted(m for m in ('torch', 'holoscan', 'starlette', 'monai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"

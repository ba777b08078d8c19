"""The ``sagemaker`` Python SDK against sagemaker-local, both majors: v3 (``pip install sagemaker`` today, in
the dev extra) with ``sagemaker.core.resources.Endpoint.invoke`` / ``invoke_async``, and v2
(``sagemaker<3``, in the side venv ``.venv-sagemaker2`` that scripts/install.sh builds) with ``Predictor``
/ ``AsyncPredictor``. Only runtime calls are made (the endpoint URL comes from
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``); nothing reaches STS or the SageMaker control plane."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from devstack.clients import s3_client
from devstack.processes import DUMMY_AWS_ENV
from tests.fidelity.conftest import ENDPOINT, ROOT, SM_BUCKET

V2_PYTHON = ROOT / ".venv-sagemaker2" / "bin" / "python"
INSTALL_TIMEOUT_S = 1200

V2_SCRIPT = r"""
import json, sys
import boto3, sagemaker
from botocore.exceptions import ClientError
from sagemaker.async_inference import WaiterConfig
from sagemaker.deserializers import JSONDeserializer
from sagemaker.predictor import Predictor
from sagemaker.predictor_async import AsyncPredictor
from sagemaker.serializers import JSONSerializer

endpoint, input_uri = sys.argv[1], sys.argv[2]
session = sagemaker.Session(boto_session=boto3.Session(), default_bucket="unused-no-sts")
out = {"version": sagemaker.__version__}
predictor = Predictor(endpoint, sagemaker_session=session, serializer=JSONSerializer(),
                      deserializer=JSONDeserializer())
out["predict"] = predictor.predict({"x": 2}, target_model="model.tar.gz")
try:
    Predictor("no-such-endpoint", sagemaker_session=session).predict(b"{}", target_model="model.tar.gz")
except ClientError as exc:
    out["unknown"] = exc.response["Error"]
response = AsyncPredictor(predictor).predict_async(input_path=input_uri)
out["output_path"] = response.output_path
out["async"] = response.get_result(WaiterConfig(max_attempts=12, delay=0.5))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def sagemaker2_python() -> Path:
    """The side venv with the sagemaker SDK v2, built by scripts/install.sh if this checkout lacks it."""
    if not V2_PYTHON.exists():
        started = time.monotonic()
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts" / "install.sh")],
            env={**os.environ, "SAGEMAKER2_ONLY": "1"},
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0 or not V2_PYTHON.exists():
            pytest.skip(
                "cannot build .venv-sagemaker2 (sagemaker<3) from the package index after "
                f"{time.monotonic() - started:.0f} s: {proc.stderr[-500:]}"
            )
    return V2_PYTHON


def _runtime_env(sagemaker_local: str, moto_s3: str) -> dict[str, str]:
    return {
        **DUMMY_AWS_ENV,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": sagemaker_local,
        "AWS_ENDPOINT_URL_S3": moto_s3,
    }


def test_sagemaker_sdk_v3_endpoint_invoke(
    sagemaker_local: str, moto_s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _runtime_env(sagemaker_local, moto_s3).items():
        monkeypatch.setenv(key, value)
    from sagemaker.core.resources import Endpoint

    session = boto3.Session(region_name="us-east-1")
    endpoint = Endpoint(endpoint_name=ENDPOINT)
    answer = endpoint.invoke(
        body=b'{"x": 3}', content_type="application/json", target_model="model.tar.gz", session=session
    )
    assert json.loads(answer.body.read()) == {"echo": {"x": 3}}
    with pytest.raises(ClientError, match="Endpoint no-such-endpoint of account 123456789012 not found."):
        Endpoint(endpoint_name="no-such-endpoint").invoke(body=b"{}", target_model="m", session=session)
    s3_client(moto_s3).put_object(Bucket=SM_BUCKET, Key="in/v3.json", Body=b'{"x": 4}')
    queued = endpoint.invoke_async(input_location=f"s3://{SM_BUCKET}/in/v3.json", session=session)
    key = queued.output_location.split(f"s3://{SM_BUCKET}/", 1)[1]
    s3 = s3_client(moto_s3)
    deadline = time.monotonic() + 60
    while True:
        try:
            assert json.loads(s3.get_object(Bucket=SM_BUCKET, Key=key)["Body"].read()) == {"echo": {"x": 4}}
            break
        except s3.exceptions.NoSuchKey:
            assert time.monotonic() < deadline, f"no async output at {queued.output_location}"
            time.sleep(0.2)


def test_sagemaker_sdk_v2_predictor_and_async_predictor(
    sagemaker_local: str, moto_s3: str, sagemaker2_python: Path
) -> None:
    s3_client(moto_s3).put_object(Bucket=SM_BUCKET, Key="in/v2.json", Body=b'{"x": 5}')
    proc = subprocess.run(
        [str(sagemaker2_python), "-c", V2_SCRIPT, ENDPOINT, f"s3://{SM_BUCKET}/in/v2.json"],
        env={
            **os.environ,
            **_runtime_env(sagemaker_local, moto_s3),
            "PYTHONPATH": "",
            "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["version"].startswith("2.")
    assert out["predict"] == {"echo": {"x": 2}}
    assert out["unknown"]["Code"] == "ValidationError"
    assert out["unknown"]["Message"] == "Endpoint no-such-endpoint of account 123456789012 not found."
    assert out["async"] == {"echo": {"x": 5}}

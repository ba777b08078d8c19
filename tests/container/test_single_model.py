"""Our image in single-model mode (real-time / async endpoints): the extracted model on ``/invocations``."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.container.conftest import (
    SERVE,
    Dataset,
    free_port,
    http,
    read_json,
    single_model_serve,
)

JSON = {"Content-Type": "application/json"}


def test_single_model_serves_invocations(
    moto_s3: str, ahi_local: str, model_store: Path, container_dataset: Dataset, tmp_path: Path
):
    with single_model_serve(moto_s3, ahi_local, model_store, tmp_path) as container:
        series = container_dataset.series[0]
        body = json.dumps({"datastoreId": series.datastore_id, "imageSetId": series.image_set_id}).encode()
        status, _, raw = http("POST", container.url + "/invocations", body, JSON)
        assert status == 200, raw
        assert read_json(raw)["results"][0]["report"]["seriesInstanceUid"] == series.series_uid
        status, _, raw = http("POST", container.url + "/invocations", b"[]", JSON)
        assert status == 400 and "must be a JSON object" in read_json(raw)["error"]["message"]


def test_single_model_that_cannot_load_exits_instead_of_waiting(tmp_path: Path):
    """MMS would retry the load forever (and report the worker READY); serve exits 1 with the reason."""
    empty = tmp_path / "model"
    empty.mkdir()
    env = {"PATH": "/usr/bin:/bin", "SAGEMAKER_BIND_TO_PORT": str(free_port())}
    started = time.monotonic()
    done = subprocess.run(
        [str(SERVE), "--single-model", "--model-dir", str(empty)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1
    assert time.monotonic() - started < 90
    assert f"the model in {empty} failed to load" in done.stderr
    assert "BundleNotFoundError" in done.stderr

"""The ``ahi-local`` command line, run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devstack.clients import ahi_client
from devstack.processes import DUMMY_AWS_ENV
from devstack.synthetic import SeriesSpec, write_series
from tests.support.ahi_metadata import read_metadata


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **DUMMY_AWS_ENV}
    return subprocess.run(
        [sys.executable, "-m", "devstack.ahi_local.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_import_command_imports_a_folder(ahi_local: str, moto_s3: str, tmp_path: Path) -> None:
    series = write_series(tmp_path / "study", SeriesSpec(slices=2, rows=8, columns=8))
    (tmp_path / "study" / "junk.txt").write_text("not dicom")
    proc = _cli("import", str(tmp_path / "study"), "--endpoint-url", ahi_local, "--s3-endpoint-url", moto_s3)
    assert proc.returncode == 1, proc.stderr  # one file was rejected
    summary = json.loads(proc.stdout)
    assert summary["jobStatus"] == "COMPLETED" and summary["imported"] == 2
    assert [f["inputFile"].rsplit("/", 1)[-1] for f in summary["failures"]] == ["junk.txt"]
    doc = read_metadata(ahi_client(ahi_local), summary["datastoreId"], summary["imageSetIds"][0])
    assert set(doc["Study"]["Series"][series.series_uid]["Instances"]) == set(series.sop_instance_uids)


def test_serve_rejects_bad_settings(tmp_path: Path) -> None:
    proc = _cli("serve", "--data-dir", str(tmp_path), "--throttle-rate", "5")
    assert proc.returncode == 2
    assert "throttle_rate=5.0 must be between 0 and 1" in proc.stderr

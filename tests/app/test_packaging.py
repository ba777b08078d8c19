"""MAP packaging files and the command-line entry points (``python -m app`` and the MAP's ``python3 <app
dir>``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.__main__ import main
from devstack.synthetic import SeriesSpec, SyntheticSeries, write_series

ROOT = Path(__file__).resolve().parents[2]
TORCH_PIN = "torch==2.13.0"


def _requirements(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def test_app_requirements_use_the_project_pins() -> None:
    app_reqs = _requirements(ROOT / "app" / "requirements.txt")
    project = set(_requirements(ROOT / "requirements.txt"))
    assert TORCH_PIN in app_reqs
    assert [r for r in app_reqs if r != TORCH_PIN and r not in project] == []
    assert not [r for r in app_reqs if r.split("=")[0].split("<")[0] == "torch" and r != TORCH_PIN]


def test_app_yaml_has_what_the_packager_reads() -> None:
    text = (ROOT / "app" / "app.yaml").read_text()
    config = yaml.safe_load(text.split("---", 1)[1])
    assert set(config) == {"application", "resources"}
    assert {"title", "version", "inputFormats", "outputFormats"} <= set(config["application"])
    assert {"cpu", "gpu", "memory", "gpuMemory"} <= set(config["resources"])


def test_python_m_app_writes_seg_stl_and_report(
    small_ct: SyntheticSeries, random_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    status = main(["app", "-i", str(small_ct.paths[0].parent), "-o", str(out), "-m", str(random_bundle)])
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    assert report["seriesInstanceUid"] == small_ct.series_uid
    assert Path(report["seg"]["path"]).is_file() and Path(report["seg"]["path"]).parent == out / "seg"


def test_map_entrypoint_with_sdk_env_vars_reports_a_clear_error(random_bundle: Path, tmp_path: Path) -> None:
    """``python3 <app dir>`` as the MAP runs it, paths from HOLOSCAN_* variables, a non-CT input: exit 2, no
    trace."""
    write_series(tmp_path / "mr", SeriesSpec(slices=20, rows=16, columns=16, modality="MR"))
    env = {
        **os.environ,
        "HOLOSCAN_INPUT_PATH": str(tmp_path / "mr"),
        "HOLOSCAN_OUTPUT_PATH": str(tmp_path / "out"),
        "HOLOSCAN_MODEL_PATH": str(random_bundle),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "app")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "no CT series in DICOM folder" in proc.stderr and "NoCTSeriesError, HTTP 422" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("missing", ["input", "model"])
def test_cli_missing_paths_are_reported(missing: str, random_bundle: Path, tmp_path: Path) -> None:
    args = {"input": str(tmp_path), "model": str(random_bundle)}
    args[missing] = str(tmp_path / "nope")
    with pytest.raises(SystemExit):  # the SDK's argument parser rejects a path that does not exist
        main(["app", "-i", args["input"], "-o", str(tmp_path / "o"), "-m", args["model"]])

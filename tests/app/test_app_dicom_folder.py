"""The app on a folder of DICOM files with the official-architecture bundle (random weights), in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from stl import mesh

from app.errors import InputNotFoundError, NoCTSeriesError
from devstack.synthetic import SeriesSpec, SyntheticSeries, write_series
from tests.app.seg_checks import check_seg, voxel_volume_mm3


@pytest.fixture(scope="module")
def folder_run(
    folder_service: Any, small_ct: SyntheticSeries, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    return folder_service.run(Path(small_ct.paths[0].parent), tmp_path_factory.mktemp("run") / "out")


def test_seg_is_a_spleen_seg_of_the_source_series(folder_run: Any, small_ct: SyntheticSeries) -> None:
    source = [pydicom.dcmread(p) for p in small_ct.paths]
    mask = check_seg(folder_run.seg_path, source)
    report = folder_run.report
    assert report["spleen"]["voxelCount"] == int(mask.sum())
    expected_ml = int(mask.sum()) * voxel_volume_mm3(source) / 1000.0
    assert report["spleen"]["volumeMl"] == pytest.approx(expected_ml, rel=1e-6, abs=1e-3)


def test_report_quality_flags_describe_the_mask(folder_run: Any, small_ct: SyntheticSeries) -> None:
    from app.quality import MIN_FOUND_ML

    source = [pydicom.dcmread(p) for p in small_ct.paths]
    mask = check_seg(folder_run.seg_path, source)
    quality = folder_run.report["quality"]
    assert quality["volumeMl"] == pytest.approx(folder_run.report["spleen"]["volumeMl"], abs=1e-3)
    assert quality["spleenFound"] == (quality["volumeMl"] >= MIN_FOUND_ML)
    assert quality["components"] == (1 if mask.any() else 0)  # the bundle keeps the largest component
    assert 0.0 <= quality["fovEdgeFraction"] <= 1.0
    assert quality["componentsRemoved"] is None and quality["meanSpleenProbability"] is None
    assert set(quality["unavailable"]["flags"]) == {"componentsRemoved", "meanSpleenProbability"}
    assert quality["needsReview"] == bool(quality["reviewReasons"])


def test_report_names_input_model_and_stages(
    folder_run: Any, small_ct: SyntheticSeries, random_bundle: Path
) -> None:
    report = json.loads((folder_run.seg_path.parent.parent / "report.json").read_text())
    assert report == folder_run.report
    assert report["seriesInstanceUid"] == small_ct.series_uid
    assert report["studyInstanceUid"] == small_ct.study_uid
    assert report["sliceCount"] == small_ct.spec.slices
    metadata = json.loads((random_bundle / "configs" / "metadata.json").read_text())
    assert (report["model"]["name"], report["model"]["version"]) == (metadata["name"], metadata["version"])
    assert report["imageSetIds"] == [] and report["datastoreId"] is None
    assert set(report["timingsSeconds"]) >= {"fetch_decode", "volume", "inference", "seg_write", "total"}


def test_stl_holds_the_spleen_mask_surface(folder_run: Any) -> None:
    if folder_run.report["spleen"]["voxelCount"] == 0:
        assert folder_run.stl_path is None
        return
    surface = mesh.Mesh.from_file(str(folder_run.stl_path))
    assert len(surface.vectors) > 0


def test_preview_is_written_and_named_in_the_report(folder_run: Any) -> None:
    from PIL import Image as PILImage

    from tests.app.preview_checks import banner_pixels, outline_pixels, read_rgb

    assert folder_run.preview_path == folder_run.seg_path.parent.parent / "preview.png"
    assert folder_run.report["previewPath"] == str(folder_run.preview_path)
    with PILImage.open(folder_run.preview_path) as img:
        assert img.format == "PNG" and img.size == (1200, 480)
    rgb = read_rgb(folder_run.preview_path)
    # Random weights: whatever the mask is, an empty one gets the banner and a non-empty one an outline.
    if folder_run.report["spleen"]["voxelCount"] == 0:
        assert banner_pixels(rgb).sum() > 2000
    else:
        assert outline_pixels(rgb).any()


def test_selection_error_then_same_service_runs_again_without_reloading_the_model(
    folder_service: Any,
    folder_run: Any,
    small_ct: SyntheticSeries,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_series(tmp_path / "mr", SeriesSpec(slices=20, rows=16, columns=16, modality="MR"))
    with pytest.raises(
        NoCTSeriesError, match=r"no CT series in DICOM folder '.*mr'; series found: .*\(MR\)"
    ) as info:
        folder_service.run(tmp_path / "mr", tmp_path / "out_mr")
    assert info.value.http_status == 422

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match=r"no DICOM series in DICOM folder '.*empty'") as info404:
        folder_service.run(tmp_path / "empty", tmp_path / "out_empty")
    assert info404.value.http_status == 404

    loads: list[str] = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(str(a[0])) or real_load(*a, **k))
    again = folder_service.run(Path(small_ct.paths[0].parent), tmp_path / "out_again")
    assert loads == []
    first = pydicom.dcmread(folder_run.seg_path).pixel_array
    np.testing.assert_array_equal(pydicom.dcmread(again.seg_path).pixel_array, first)


def test_a_failed_first_run_does_not_break_the_next_one(
    random_bundle: Path, small_ct: SyntheticSeries
) -> None:
    """holoscan segfaulted on the run after a failed *first* run of an Application (exit 139); the service
    starts a fresh application after a failure. Run in a subprocess so a regression fails this test only."""
    import subprocess
    import sys

    code = (
        "import sys, tempfile\n"
        "from pathlib import Path\n"
        "from app.errors import InputNotFoundError, NoCTSeriesError\n"
        "from app.service import SpleenSegService\n"
        "from devstack.synthetic import SeriesSpec, write_series\n"
        "tmp = Path(tempfile.mkdtemp())\n"
        "write_series(tmp / 'mr', SeriesSpec(slices=20, rows=16, columns=16, modality='MR'))\n"
        "svc = SpleenSegService(sys.argv[1])\n"
        "try:\n"
        "    svc.run(tmp / 'mr', tmp / 'a')\n"
        "    raise SystemExit('the MR run should have failed')\n"
        "except NoCTSeriesError:\n"
        "    pass\n"
        "print('VOXELS', svc.run(Path(sys.argv[2]), tmp / 'b').report['spleen']['voxelCount'])\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", code, str(random_bundle), str(small_ct.paths[0].parent)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "VOXELS" in proc.stdout

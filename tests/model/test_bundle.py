"""Bundle: find_bundle_dir on good and bad layouts, reproducible model.tar.gz, and the drop-in guarantee:
an official-architecture network with random weights, scripted, runs through the same loading code as ours."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.bundle import (
    BundleError,
    BundleNotFoundError,
    copy_bundle,
    find_bundle_dir,
    load_bundle,
    read_configs,
    write_bundle,
)
from model import SOURCE_BUNDLE_DIR
from model.package import build_archive

EXPECTED_LAYOUT = [
    "spleen_ct_segmentation/",
    "spleen_ct_segmentation/configs/",
    "spleen_ct_segmentation/configs/inference.json",
    "spleen_ct_segmentation/configs/metadata.json",
    "spleen_ct_segmentation/models/",
    "spleen_ct_segmentation/models/model.ts",
]


def _extract(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def test_archive_is_byte_identical_and_has_the_layout(tmp_path: Path) -> None:
    a = build_archive(tmp_path / "a" / "model.tar.gz", code_dir=None)
    b = build_archive(tmp_path / "b" / "model.tar.gz", code_dir=None)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    with tarfile.open(a) as tar:
        members = tar.getmembers()
    assert [m.name.rstrip("/") for m in members] == [n.rstrip("/") for n in EXPECTED_LAYOUT]
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert len({m.mtime for m in members}) == 1
    bundle = find_bundle_dir(_extract(a, tmp_path / "x"))
    assert bundle == tmp_path / "x" / "spleen_ct_segmentation"
    assert (bundle / "models" / "model.ts").read_bytes() == (
        SOURCE_BUNDLE_DIR / "models" / "model.ts"
    ).read_bytes()


def test_archive_includes_code_dir_when_given(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text("# entry\n")
    (code / "requirements.txt").write_text("monai==1.6.1\n")
    out = build_archive(tmp_path / "model.tar.gz", code_dir=code)
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "code/inference.py" in names and "code/requirements.txt" in names
    assert find_bundle_dir(_extract(out, tmp_path / "x")).name == "spleen_ct_segmentation"
    with pytest.raises(FileNotFoundError, match="code directory .* does not exist"):
        build_archive(tmp_path / "m2.tar.gz", code_dir=tmp_path / "nope")


def test_find_bundle_dir_accepts_the_bundle_itself() -> None:
    assert find_bundle_dir(SOURCE_BUNDLE_DIR) == SOURCE_BUNDLE_DIR


def test_find_bundle_dir_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(BundleNotFoundError, match="does not exist or is not a directory"):
        find_bundle_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleNotFoundError, match=r"no MONAI bundle .*configs/metadata.json"):
        find_bundle_dir(tmp_path / "empty")

    half = tmp_path / "half" / "spleen_ct_segmentation" / "configs"
    half.mkdir(parents=True)
    shutil.copy(SOURCE_BUNDLE_DIR / "configs" / "metadata.json", half)
    with pytest.raises(BundleNotFoundError, match=r"has configs/metadata.json but no models/model.ts"):
        find_bundle_dir(tmp_path / "half")

    two = tmp_path / "two"
    copy_bundle(SOURCE_BUNDLE_DIR, two / "one")
    copy_bundle(SOURCE_BUNDLE_DIR, two / "other")
    with pytest.raises(BundleError, match="more than one bundle"):
        find_bundle_dir(two)

    bad = copy_bundle(SOURCE_BUNDLE_DIR, tmp_path / "bad" / "b")
    (bad / "configs" / "metadata.json").write_text("{not json")
    with pytest.raises(BundleError, match="metadata.json is not valid JSON"):
        find_bundle_dir(tmp_path / "bad")


def test_load_bundle_rejects_a_corrupt_model(tmp_path: Path) -> None:
    bad = copy_bundle(SOURCE_BUNDLE_DIR, tmp_path / "b")
    (bad / "models" / "model.ts").write_bytes(b"not a torchscript file")
    with pytest.raises(BundleError, match="models/model.ts is not a loadable TorchScript file"):
        load_bundle(bad, device="cpu")


def _official_unet():  # type: ignore[no-untyped-def]
    """The official spleen_ct_segmentation network, defined here independently of our configs."""
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(1234)
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
        norm="batch",
    )


def _small_ct(path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = rng.normal(40, 30, size=(70, 60, 24)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([-2.5, -2.5, 5.0, 1.0])), str(path))
    return path


def test_official_architecture_with_random_weights_is_a_drop_in(tmp_path: Path) -> None:
    import torch
    from monai.deploy.operators.monai_bundle_inference_operator import (
        _load_model_from_directory_bundle,
        get_bundle_config,
    )

    from model.evaluate import segment_file

    net = _official_unet()
    assert sum(p.numel() for p in net.parameters()) == 4_808_917
    bundle_dir = tmp_path / "official" / "spleen_ct_segmentation"
    model_ts = write_bundle(bundle_dir, net, *read_configs(SOURCE_BUNDLE_DIR))
    # our archive + loader
    archive = build_archive(tmp_path / "model.tar.gz", bundle_dir=bundle_dir, code_dir=None)
    found = find_bundle_dir(_extract(archive, tmp_path / "x"))
    bundle = load_bundle(found, device="cpu")
    pred = segment_file(bundle, _small_ct(tmp_path / "ct.nii.gz"))
    assert pred.shape == (70, 60, 24) and set(np.unique(pred)) <= {0, 1}
    x = torch.rand(1, 1, 96, 96, 96)
    with torch.no_grad():
        np.testing.assert_allclose(bundle.network(x).numpy(), net.eval()(x).numpy(), rtol=1e-4, atol=1e-4)
    # MONAI Deploy's own bundle reading: directory bundle and model.ts alone (configs embedded as extra files)
    parser = get_bundle_config(str(found), ["inference"])
    assert list(parser["_meta_"]["network_data_format"]["inputs"]) == ["image"]
    assert isinstance(
        _load_model_from_directory_bundle(found, torch.device("cpu"), parser), torch.jit.ScriptModule
    )
    alone = get_bundle_config(str(model_ts), ["inference"])
    assert list(alone.get_parsed_content("inferer").roi_size) == [96, 96, 96]
    with zipfile.ZipFile(model_ts) as z:
        assert {"model/extra/metadata.json", "model/extra/inference.json"} <= set(z.namelist())


def test_committed_bundle_contract() -> None:
    bundle = find_bundle_dir(SOURCE_BUNDLE_DIR)
    assert (bundle / "models" / "model.ts").stat().st_size < 25 * 1024 * 1024
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    inf = json.loads((bundle / "configs" / "inference.json").read_text())
    assert "not for clinical use" in meta["data_source"]
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 2
    assert inf["inferer"] == {
        "_target_": "SlidingWindowInferer",
        "roi_size": [96, 96, 96],
        "sw_batch_size": 4,
        "overlap": 0.5,
    }
    pre = {t["_target_"]: t for t in inf["preprocessing"]["transforms"]}
    assert pre["Spacingd"]["pixdim"] == [1.5, 1.5, 2.0] and pre["Orientationd"]["axcodes"] == "RAS"
    assert (pre["ScaleIntensityRanged"]["a_min"], pre["ScaleIntensityRanged"]["a_max"]) == (-57, 164)
    assert "torch.cuda.is_available()" in inf["device"]

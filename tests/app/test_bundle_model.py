"""BundleModel: where the bundle may be given, what the report/SEG learn about the model, and bad bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.bundle_model import BundleModel, make_app_context
from app.errors import ModelError


def test_bundle_found_from_archive_root_dir_or_model_ts(random_bundle: Path, tmp_path: Path) -> None:
    archive_root = tmp_path / "extracted"
    shutil.copytree(random_bundle, archive_root / "spleen_ct_segmentation")
    (archive_root / "code").mkdir()
    (archive_root / "code" / "inference.py").write_text("# prebuilt-container entry, ignored here\n")
    metadata = json.loads((random_bundle / "configs" / "metadata.json").read_text())
    for given in (archive_root, random_bundle, random_bundle / "models" / "model.ts"):
        model = BundleModel(given)
        assert (
            model.identity.bundle_dir.resolve()
            == (archive_root / "spleen_ct_segmentation" if given == archive_root else random_bundle).resolve()
        )
        assert (model.identity.name, model.identity.version) == (metadata["name"], metadata["version"])
        assert model.identity.spleen_label == 1 and model.identity.device == "cpu"
        assert model.predictor is not None and len(model.identity.sha256) == 64


def test_app_context_hands_the_loaded_model_to_the_sdk(random_bundle: Path) -> None:
    model = BundleModel(random_bundle)
    context = make_app_context(model)
    assert context.models is model and context.models.get("spleen_ct_segmentation") is model


def test_missing_bundle_and_bundle_without_spleen_channel(random_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ModelError, match=r"cannot load the spleen bundle from .*nowhere.*does not exist"
    ) as info:
        BundleModel(tmp_path / "nowhere")
    assert info.value.http_status == 500
    other = shutil.copytree(random_bundle, tmp_path / "liver_bundle")
    meta_path = other / "configs" / "metadata.json"
    metadata = json.loads(meta_path.read_text())
    metadata["network_data_format"]["outputs"]["pred"]["channel_def"] = {"0": "background", "1": "liver"}
    meta_path.write_text(json.dumps(metadata))
    with pytest.raises(ModelError, match=r"no channel named 'spleen'"):
        BundleModel(other)

"""Phantom study imported into ahi-local (real moto S3 + ahi-local processes) -> the app with an AHI request.

The SEG/report checks run with whatever model the repository commits (``model/spleen_ct_segmentation``); the
accuracy checks (Dice >= 0.9 against the phantom truth, volume within 5 %) need the trained weights and are
skipped, with the reason, while the committed bundle's ``eval_metrics.mean_dice`` is null (placeholder random
weights).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from ahi_connector.errors import ImageSetNotFoundError
from app.errors import InputNotFoundError
from app.operators.ahi_data_loader_operator import resolve_study
from app.service import SegRequest, SpleenSegService
from devstack.clients import ahi_client, s3_client
from devstack.importing import create_datastore, import_folder
from model import SOURCE_BUNDLE_DIR
from tests.app.preview_checks import check_preview_orientation
from tests.app.seg_checks import check_seg, dice, source_slices

#: 56 slices x 160^2 at 3.0 / 2.0 mm: the whole spleen in the field of view, small enough for CI. Seed 12 is
#: a supine (HFS) phantom with a 191 mL spleen. Measured with the committed step-750 model (channels
#: 8..128): seeds 3 / 12 / 11 give Dice 0.937 / 0.924 / 0.623 (seed 11's anatomy is hard for that model in
#: every patient position) and volumes -12 % of truth, identical to model/evaluate.py's NIfTI pipeline.
PHANTOM_SHAPE = (56, 160, 160)
PHANTOM_SPACING = (3.0, 2.0, 2.0)
PHANTOM_SEED = 12


@dataclass(frozen=True)
class ImportedStudy:
    datastore_id: str
    study_uid: str
    series_uid: str
    image_set_id: str
    folder: Path
    label: np.ndarray
    spleen_volume_ml: float
    phantom: Any


def _extra_series(source: list[Path], out: Path, count: int, number: int, image_type: list[str]) -> str:
    """A second series of the same study from the first ``count`` phantom slices (new UIDs)."""
    series_uid = pydicom.uid.generate_uid()
    out.mkdir(parents=True)
    for k, path in enumerate(source[:count]):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = number
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageType = image_type
        ds.save_as(out / f"x{k:03d}.dcm")
    return series_uid


@pytest.fixture(scope="module")
def imported_study(ahi_local: str, moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> ImportedStudy:
    from model.phantoms import generate_phantom, write_dicom_series

    root = tmp_path_factory.mktemp("phantom_study")
    phantom = generate_phantom(seed=PHANTOM_SEED, shape=PHANTOM_SHAPE, spacing=PHANTOM_SPACING)
    paths = write_dicom_series(phantom, root / "import" / "ct")
    _extra_series(paths, root / "import" / "thin", 20, 90, ["ORIGINAL", "PRIMARY", "AXIAL"])
    _extra_series(paths, root / "import" / "scout", 3, 91, ["ORIGINAL", "PRIMARY", "LOCALIZER"])
    ahi = ahi_client(ahi_local)
    datastore_id = create_datastore(ahi, "app-tests")
    result = import_folder(ahi, s3_client(moto_s3), datastore_id, root / "import")
    assert result.job_status == "COMPLETED" and not result.failure, result.failure
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    image_set_of = {
        line["importResponse"]["imageSetId"]
        for line in result.success
        if Path(line.get("input", line.get("inputFile", ""))).parent.name == "ct"
    }
    series_uid = str(first.SeriesInstanceUID)
    if len(image_set_of) != 1:  # success lines without the input file name: find the image set by search
        image_set_of = {_image_set_of_series(ahi, datastore_id, result.image_set_ids, series_uid)}
    return ImportedStudy(
        datastore_id=datastore_id,
        study_uid=str(first.StudyInstanceUID),
        series_uid=series_uid,
        image_set_id=image_set_of.pop(),
        folder=root / "import" / "ct",
        label=phantom.label,
        spleen_volume_ml=phantom.spleen_volume_ml,
        phantom=phantom,
    )


def _image_set_of_series(ahi: Any, datastore_id: str, image_set_ids: list[str], series_uid: str) -> str:
    import gzip

    for image_set_id in image_set_ids:
        blob = ahi.get_image_set_metadata(datastoreId=datastore_id, imageSetId=image_set_id)[
            "imageSetMetadataBlob"
        ]
        if series_uid in json.loads(gzip.decompress(blob.read()))["Study"]["Series"]:
            return image_set_id
    raise AssertionError(f"series {series_uid} not found in image sets {image_set_ids}")


@pytest.fixture(scope="module")
def ahi_service(ahi_local: str) -> Iterator[SpleenSegService]:
    with SpleenSegService(SOURCE_BUNDLE_DIR, ahi_client=ahi_client(ahi_local)) as service:
        yield service


@pytest.fixture(scope="module")
def ahi_run(
    ahi_service: SpleenSegService, imported_study: ImportedStudy, tmp_path_factory: pytest.TempPathFactory
):
    request = SegRequest.from_json(
        {"datastoreId": imported_study.datastore_id, "imageSetId": imported_study.image_set_id}
    )
    return ahi_service.run(request, tmp_path_factory.mktemp("ahi_run"))


def _source(study: ImportedStudy) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(study.folder.glob("*.dcm"))]


def test_ahi_request_gives_a_spleen_seg_of_the_imported_series(
    ahi_run: Any, imported_study: ImportedStudy
) -> None:
    mask = check_seg(ahi_run.seg_path, _source(imported_study))
    report = ahi_run.report
    assert report["datastoreId"] == imported_study.datastore_id
    assert report["imageSetIds"] == [imported_study.image_set_id]
    assert report["request"] == {
        "datastoreId": imported_study.datastore_id,
        "imageSetId": imported_study.image_set_id,
    }
    assert (report["studyInstanceUid"], report["seriesInstanceUid"]) == (
        imported_study.study_uid,
        imported_study.series_uid,
    )
    assert report["spleen"]["voxelCount"] == int(mask.sum())


def test_same_app_on_the_dicom_folder_gives_identical_seg_pixels(
    ahi_service: SpleenSegService, ahi_run: Any, imported_study: ImportedStudy, tmp_path: Path
) -> None:
    folder_run = ahi_service.run(imported_study.folder, tmp_path / "folder_run")
    source = _source(imported_study)
    np.testing.assert_array_equal(check_seg(folder_run.seg_path, source), check_seg(ahi_run.seg_path, source))
    assert folder_run.report["spleen"] == ahi_run.report["spleen"]


def test_study_request_selects_the_largest_axial_ct_series_across_image_sets(
    ahi_service: SpleenSegService, imported_study: ImportedStudy
) -> None:
    exporter = ahi_service._get_exporter()
    image_sets = exporter.find_image_sets_for_study(imported_study.datastore_id, imported_study.study_uid)
    assert len(image_sets) >= 2  # the phantom series plus the thin / scout series
    chosen = resolve_study(exporter, imported_study.datastore_id, imported_study.study_uid)
    assert chosen == (imported_study.image_set_id, imported_study.series_uid)


def test_missing_image_set_and_study_are_404(
    ahi_service: SpleenSegService, imported_study: ImportedStudy, tmp_path: Path
) -> None:
    missing = {"datastoreId": imported_study.datastore_id, "imageSetId": "0" * 32}
    with pytest.raises(ImageSetNotFoundError, match="0" * 32) as info:
        ahi_service.run(missing, tmp_path / "a")
    assert info.value.http_status == 404
    no_study = {"datastoreId": imported_study.datastore_id, "studyInstanceUid": "1.2.3.4.5"}
    with pytest.raises(
        InputNotFoundError, match=r"no image set in datastore .* holds study 1\.2\.3\.4\.5"
    ) as info2:
        ahi_service.run(no_study, tmp_path / "b")
    assert info2.value.http_status == 404


def _trained() -> bool:
    """The committed bundle reports a validation metric (the placeholder had ``"mean_dice": null``)."""
    metadata = json.loads((SOURCE_BUNDLE_DIR / "configs" / "metadata.json").read_text())
    metrics = metadata.get("eval_metrics") or {}
    return any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())


needs_trained_model = pytest.mark.skipif(
    not _trained(),
    reason="committed bundle has placeholder random weights (metadata.json eval_metrics has no value)",
)


def _truth_on_seg_grid(study: ImportedStudy, source: list[pydicom.Dataset]) -> np.ndarray:
    """phantom.label[k] is slice CT{k+1} (InstanceNumber k+1); check_seg orders slices along the normal."""
    return np.stack([study.label[int(ds.InstanceNumber) - 1] for ds in source_slices(source)])


def test_phantom_truth_is_aligned_with_the_seg_grid(imported_study: ImportedStudy) -> None:
    """The Dice test's truth covers homogeneous soft tissue in the source slices (guards that test: with the
    slice order reversed the same voxels would straddle organs, HU std about 150)."""
    source = _source(imported_study)
    truth = _truth_on_seg_grid(imported_study, source).astype(bool)
    hu = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in source_slices(source)]
    )
    assert truth.sum() > 1000
    assert 20.0 < float(np.median(hu[truth])) < 200.0
    assert float(hu[truth].std()) < 50.0


def test_app_segments_exactly_like_the_bundle_reference_pipeline(
    ahi_run: Any, imported_study: ImportedStudy, tmp_path: Path
) -> None:
    """AHI -> connector -> SDK operators -> SEG gives the same mask as the bundle's own config run on a
    NIfTI of the same phantom (model/evaluate.py: LoadImaged, preprocessing, sliding window, Invertd): same
    Dice against the truth and same volume, whatever the weights (random placeholder or trained)."""
    from app.bundle import load_bundle
    from model.evaluate import evaluate_phantom

    reference = evaluate_phantom(load_bundle(SOURCE_BUNDLE_DIR), imported_study.phantom, tmp_path)
    source = _source(imported_study)
    mask = check_seg(ahi_run.seg_path, source)
    assert dice(mask, _truth_on_seg_grid(imported_study, source)) == pytest.approx(reference.dice, abs=1e-6)
    assert ahi_run.report["spleen"]["volumeMl"] == pytest.approx(reference.predicted_volume_ml, abs=1e-3)


@needs_trained_model
def test_trained_model_dice_against_phantom_truth(ahi_run: Any, imported_study: ImportedStudy) -> None:
    source = _source(imported_study)
    mask = check_seg(ahi_run.seg_path, source)
    assert dice(mask, _truth_on_seg_grid(imported_study, source)) >= 0.9


@needs_trained_model
def test_trained_model_volume_within_5_percent_of_truth(ahi_run: Any, imported_study: ImportedStudy) -> None:
    assert ahi_run.report["spleen"]["volumeMl"] == pytest.approx(imported_study.spleen_volume_ml, rel=0.05)


def test_loader_operator_from_a_request_file_emits_what_the_sdk_folder_loader_emits(
    ahi_service: SpleenSegService, imported_study: ImportedStudy, tmp_path: Path
) -> None:
    """AHIDataLoaderOperator (request JSON file, in a holoscan app) vs the SDK loader on the files."""
    from monai.deploy.conditions import CountCondition
    from monai.deploy.core import Application, Fragment, Operator
    from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator

    from app.app import IN_PROCESS_ARGV
    from app.operators.ahi_data_loader_operator import AHIDataLoaderOperator
    from tests.app.test_ahi_loader_grouping import _summary

    request_file = tmp_path / "request.json"
    request_file.write_text(
        json.dumps({"datastoreId": imported_study.datastore_id, "imageSetId": imported_study.image_set_id})
    )
    received: list[Any] = []

    class Collect(Operator):
        def setup(self, spec: Any) -> None:
            spec.input("dicom_study_list")

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            received.append(op_input.receive("dicom_study_list"))

    class LoaderApp(Application):
        def compose(self) -> None:
            loader = AHIDataLoaderOperator(
                self,
                CountCondition(self, 1),
                exporter=ahi_service._get_exporter(),
                input_file=request_file,
                name="loader",
            )
            self.add_flow(loader, Collect(self, name="collect"), {("dicom_study_list", "dicom_study_list")})

    LoaderApp(IN_PROCESS_ARGV).run()
    ours = received[0]
    sdk = DICOMDataLoaderOperator(Fragment(), name="sdk").load_data_to_studies(imported_study.folder)
    assert _summary(ours) == _summary(sdk)
    by_uid = {
        str(sop.get_native_sop_instance().SOPInstanceUID): sop.get_pixel_array()
        for study in sdk
        for s in study.get_all_series()
        for sop in s.get_sop_instances()
    }
    for sop in ours[0].get_all_series()[0].get_sop_instances():
        uid = str(sop.get_native_sop_instance().SOPInstanceUID)
        np.testing.assert_array_equal(sop.get_pixel_array(), by_uid[uid])


def test_preview_shows_the_left_sided_spleen_on_the_image_right(
    ahi_run: Any, imported_study: ImportedStudy
) -> None:
    """The app's own preview.png (model mask, SDK volume order, series affine) read back numerically."""
    assert ahi_run.preview_path is not None and ahi_run.preview_path.name == "preview.png"
    assert ahi_run.report["previewPath"] == str(ahi_run.preview_path)
    phantom = imported_study.phantom
    measured = check_preview_orientation(
        ahi_run.preview_path,
        phantom.hu,
        phantom.label,
        phantom.geometry.affine_lps(),
        slab_mm=max(PHANTOM_SPACING),
        tol=0.08,  # the outline is the model's (Dice ~0.92), the truth is the phantom's label
        # Bone centres move with the plane, which here goes through the model's mask, not the label: the
        # spine is checked only for being posterior (lower half of the axial view).
        checked=("outline",),
    )
    assert measured["axial"]["outline"][0] > 0.5  # patient left on the image right
    assert measured["axial"]["bone"][1] > 0.5


def test_report_counts_the_frames_fetched_for_the_selected_series(
    ahi_run: Any, imported_study: ImportedStudy
) -> None:
    """The fetch counts behind the endpoint's FramesFetched / FrameRetries / Throttles metrics (no faults)."""
    slices = len(list(imported_study.folder.glob("*.dcm")))
    assert ahi_run.report["fetch"] == {"frames": slices, "frameRetries": 0, "throttles": 0}

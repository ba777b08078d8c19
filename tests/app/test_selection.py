"""Series selection rules: the documented choice and one specific error (HTTP 422) per unusable input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from monai.deploy.core import Fragment

from app.errors import (
    InputNotFoundError,
    LocalizerOnlyError,
    NoCTSeriesError,
    NonAxialSeriesError,
    SeriesSelectionError,
    TooFewSlicesError,
    UnsupportedPixelFormatError,
)
from app.operators.ahi_data_loader_operator import studies_from_datasets
from app.operators.ct_series_selector_operator import CTSeriesSelectorOperator
from app.selection import CT_SELECTION_RULES, MIN_SLICES, choose_series
from devstack.synthetic import SeriesSpec, write_series

Edit = Callable[[pydicom.Dataset], None]


def _series(folder: Path, edit: Edit | None = None, **spec: object) -> list[pydicom.Dataset]:
    """Header datasets of one synthetic series (tiny pixels: selection reads headers only)."""
    written = write_series(folder, SeriesSpec(rows=8, columns=8, **spec))  # type: ignore[arg-type]
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in written.paths]
    for ds in datasets:
        if edit is not None:
            edit(ds)
    return datasets


def _selected_uid(datasets: list[pydicom.Dataset]) -> str:
    selected = choose_series(studies_from_datasets(datasets))
    assert len(selected) == 1 and len(selected[0].selected_series) == 1
    return str(selected[0].selected_series[0].series.SeriesInstanceUID)


def _localizer(ds: pydicom.Dataset) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]


def _sagittal(ds: pydicom.Dataset) -> None:
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]


def test_largest_axial_ct_series_wins(tmp_path: Path) -> None:
    study = "1.2.826.0.1.3680043.8.498.100"
    small = _series(tmp_path / "a", slices=MIN_SLICES + 2, study_uid=study, series_number=2)
    large = _series(tmp_path / "b", slices=MIN_SLICES + 6, study_uid=study, series_number=3)
    scout = _series(tmp_path / "c", _localizer, slices=MIN_SLICES + 20, study_uid=study, series_number=1)
    mr = _series(tmp_path / "d", slices=MIN_SLICES + 30, study_uid=study, modality="MR", series_number=4)
    assert _selected_uid(small + scout + large + mr) == str(large[0].SeriesInstanceUID)


def test_sdk_rule_engine_and_operator_filter_agree(tmp_path: Path) -> None:
    study = "1.2.826.0.1.3680043.8.498.101"
    ct = _series(tmp_path / "a", slices=MIN_SLICES, study_uid=study)
    mr = _series(tmp_path / "b", slices=MIN_SLICES + 5, study_uid=study, modality="MR")
    operator = CTSeriesSelectorOperator(Fragment(), name="selector")
    selected = operator.filter(json.loads(CT_SELECTION_RULES), studies_from_datasets(ct + mr))
    uids = [str(s.series.SeriesInstanceUID) for s in selected[0].selected_series]
    assert uids == [str(ct[0].SeriesInstanceUID)]


@pytest.mark.parametrize(
    ("edit", "spec", "error", "match"),
    [
        (None, {"modality": "MR"}, NoCTSeriesError, r"no CT series in the input; series found: .* \(MR\)"),
        (_localizer, {}, LocalizerOnlyError, r"localizer/scout \(ImageType \[.*'LOCALIZER'\]"),
        (None, {"series_description": "Topogram 0.6 T20f"}, LocalizerOnlyError, r"localizer/scout"),
        (
            None,
            {"slices": MIN_SLICES - 1},
            TooFewSlicesError,
            rf"{MIN_SLICES - 1} slices, fewer .* {MIN_SLICES}",
        ),
        (
            None,
            {"photometric": "RGB", "bits_allocated": 8, "bits_stored": 8, "signed": False},
            UnsupportedPixelFormatError,
            r"\(0028,0002\) Samples per Pixel 3 / \(0028,0004\) Photometric Interpretation 'RGB'",
        ),
        (_sagittal, {}, NonAxialSeriesError, r"not axial \(slice normal \. z = 0\.00"),
    ],
)
def test_unusable_input_raises_a_specific_422(
    tmp_path: Path, edit: Edit | None, spec: dict[str, object], error: type[SeriesSelectionError], match: str
) -> None:
    spec = {"slices": MIN_SLICES + 1, **spec}
    datasets = _series(tmp_path, edit, **spec)
    with pytest.raises(error, match=match) as info:
        choose_series(studies_from_datasets(datasets))
    assert info.value.http_status == 422
    if error is not NoCTSeriesError:
        assert str(datasets[0].SeriesInstanceUID) in str(info.value)


def test_mixed_rejections_list_every_series(tmp_path: Path) -> None:
    study = "1.2.826.0.1.3680043.8.498.102"
    short = _series(tmp_path / "a", slices=MIN_SLICES - 4, study_uid=study)
    scout = _series(tmp_path / "b", _localizer, slices=3, study_uid=study)
    match = r"no CT series in image set X can be segmented: .*slices.*; .*scout"
    with pytest.raises(TooFewSlicesError, match=match):
        choose_series(studies_from_datasets(short + scout), source="image set X")


def test_empty_input_is_404() -> None:
    with pytest.raises(InputNotFoundError, match=r"no DICOM series in study 1\.2\.3") as info:
        choose_series([], source="study 1.2.3")
    assert info.value.http_status == 404

"""studies_from_datasets builds what the SDK's DICOMDataLoaderOperator builds from the same instances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from monai.deploy.core import Fragment
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator

from app.operators.ahi_data_loader_operator import studies_from_datasets
from devstack.synthetic import SeriesSpec, write_series


def _properties(obj: Any) -> dict[str, Any]:
    # BodyPartExamined: the SDK loader reads tag (0008,0015) instead of (0018,0015) and never sets it;
    # ours does (checked separately below).
    names = [n for n, v in vars(type(obj)).items() if isinstance(v, property) and n != "BodyPartExamined"]
    return {n: getattr(obj, n) for n in names}


def _summary(studies: list[Any]) -> dict[str, Any]:
    out = {}
    for study in studies:
        series = {}
        for s in study.get_all_series():
            uids = sorted(str(sop.get_native_sop_instance().SOPInstanceUID) for sop in s.get_sop_instances())
            series[s.SeriesInstanceUID] = (_properties(s), uids)
        out[study.StudyInstanceUID] = (_properties(study), series)
    return out


def test_same_studies_series_attributes_and_instances_as_sdk_loader(tmp_path: Path) -> None:
    study = "1.2.826.0.1.3680043.8.498.200"
    folder = tmp_path / "dicom"
    write_series(folder / "a", SeriesSpec(slices=5, rows=8, columns=8, study_uid=study, series_number=7))
    b = write_series(folder / "b", SeriesSpec(slices=4, rows=8, columns=8, study_uid=study, modality="MR"))
    # A re-acquired slice at the same position: the higher AcquisitionNumber must win in both loaders.
    dup = pydicom.dcmread(b.paths[0])
    dup.SOPInstanceUID = pydicom.uid.generate_uid()
    dup.AcquisitionNumber = 2
    dup.save_as(folder / "b" / "dup.dcm")
    write_series(folder / "c", SeriesSpec(slices=3, rows=8, columns=8))  # another study

    sdk = DICOMDataLoaderOperator(Fragment(), name="sdk_loader").load_data_to_studies(folder)
    datasets = [pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))]
    ours = studies_from_datasets(datasets)

    assert _summary(ours) == _summary(sdk)
    series_b = _summary(ours)[study][1][b.series_uid]
    assert str(dup.SOPInstanceUID) in series_b[1] and str(b.sop_instance_uids[0]) not in series_b[1]
    assert len(_summary(ours)) == 2
    assert {s.BodyPartExamined for st in ours for s in st.get_all_series()} == {"ABDOMEN"}


def test_instances_without_uids_are_skipped(tmp_path: Path) -> None:
    written = write_series(tmp_path, SeriesSpec(slices=3, rows=8, columns=8))
    datasets = [pydicom.dcmread(p) for p in written.paths]
    del datasets[0].SOPInstanceUID
    studies = studies_from_datasets(datasets)
    assert len(studies[0].get_all_series()[0].get_sop_instances()) == 2

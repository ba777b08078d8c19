"""Import semantics: series → image set, new instances → new version, conflicts → non-primary image set,
bad files → failure.ndjson with a reason while the rest of the job completes."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from devstack.clients import ahi_client, s3_client
from devstack.importing import create_datastore, import_folder, run_import, upload_folder
from devstack.synthetic import SeriesSpec, write_series
from tests.support.ahi_metadata import read_metadata


@pytest.fixture()
def env(ahi_local: str, moto_s3: str) -> dict[str, Any]:
    ahi = ahi_client(ahi_local, max_attempts=1)
    return {"ahi": ahi, "s3": s3_client(moto_s3), "datastore_id": create_datastore(ahi, "grouping")}


def _instances(ahi: Any, ds: str, image_set: str) -> dict[str, Any]:
    doc = read_metadata(ahi, ds, image_set)
    return {
        sop: inst for series in doc["Study"]["Series"].values() for sop, inst in series["Instances"].items()
    }


def test_more_instances_of_a_series_add_a_version(env: dict[str, Any], tmp_path: Path) -> None:
    ahi, s3, ds = env["ahi"], env["s3"], env["datastore_id"]
    study, series = generate_uid(), generate_uid()
    first = write_series(
        tmp_path / "a", SeriesSpec(slices=3, rows=8, columns=8, study_uid=study, series_uid=series)
    )
    result1 = import_folder(ahi, s3, ds, tmp_path / "a")
    assert len(result1.image_set_ids) == 1
    image_set = result1.image_set_ids[0]
    more = write_series(
        tmp_path / "b",
        SeriesSpec(slices=2, rows=8, columns=8, study_uid=study, series_uid=series, origin=(0.0, 0.0, 200.0)),
    )
    result2 = import_folder(ahi, s3, ds, tmp_path / "b")
    assert result2.image_set_ids == [image_set]
    assert all(line["importResponse"]["isPrimary"] is True for line in result2.success)
    assert set(_instances(ahi, ds, image_set)) == set(first.sop_instance_uids + more.sop_instance_uids)
    assert ahi.get_image_set(datastoreId=ds, imageSetId=image_set)["versionId"] == "2"
    version1 = read_metadata(ahi, ds, image_set, "1")["Study"]["Series"][series]["Instances"]
    assert set(version1) == set(first.sop_instance_uids)
    # The same file again replaces that instance in a new version; the instance count stays.
    again = tmp_path / "c"
    again.mkdir()
    (again / "x.dcm").write_bytes(first.paths[0].read_bytes())
    result3 = import_folder(ahi, s3, ds, again)
    assert result3.image_set_ids == [image_set]
    assert ahi.get_image_set(datastoreId=ds, imageSetId=image_set)["versionId"] == "3"
    assert len(_instances(ahi, ds, image_set)) == 5


def test_conflicting_instances_become_a_non_primary_image_set(env: dict[str, Any], tmp_path: Path) -> None:
    ahi, s3, ds = env["ahi"], env["s3"], env["datastore_id"]
    study, series = generate_uid(), generate_uid()
    write_series(tmp_path / "a", SeriesSpec(slices=2, rows=8, columns=8, study_uid=study, series_uid=series))
    primary = import_folder(ahi, s3, ds, tmp_path / "a").image_set_ids[0]
    other = write_series(
        tmp_path / "b",
        SeriesSpec(
            slices=1, rows=8, columns=8, study_uid=study, series_uid=series, patient_id="SOMEONE-ELSE"
        ),
    )
    result = import_folder(ahi, s3, ds, tmp_path / "b")
    assert len(result.image_set_ids) == 1 and result.image_set_ids[0] != primary
    assert result.success[0]["importResponse"]["isPrimary"] is False
    conflict = result.image_set_ids[0]
    assert ahi.get_image_set(datastoreId=ds, imageSetId=conflict)["isPrimary"] is False
    assert set(_instances(ahi, ds, conflict)) == set(other.sop_instance_uids)
    assert len(_instances(ahi, ds, primary)) == 2
    assert ahi.get_image_set(datastoreId=ds, imageSetId=primary)["versionId"] == "1"
    # A different series of the same study with the same study-level elements is fine and primary.
    write_series(tmp_path / "c", SeriesSpec(slices=1, rows=8, columns=8, study_uid=study, series_number=2))
    third = import_folder(ahi, s3, ds, tmp_path / "c")
    assert third.success[0]["importResponse"]["isPrimary"] is True and third.image_set_ids[0] != primary


def test_bad_files_land_in_failure_ndjson(env: dict[str, Any], tmp_path: Path) -> None:
    ahi, s3, ds = env["ahi"], env["s3"], env["datastore_id"]
    good = write_series(tmp_path / "in", SeriesSpec(slices=2, rows=16, columns=16))
    truncated = tmp_path / "in" / "truncated.dcm"
    whole = good.paths[0].read_bytes()
    truncated.write_bytes(whole[: len(whole) - 200])
    (tmp_path / "in" / "notes.txt").write_text("this is not DICOM\n")
    (tmp_path / "in" / "empty.dcm").write_bytes(b"")
    no_series = tmp_path / "in" / "no_series.dcm"
    ds_missing = pydicom.dcmread(good.paths[1])
    del ds_missing.SeriesInstanceUID
    ds_missing.SOPInstanceUID = generate_uid()
    ds_missing.save_as(no_series)
    result = import_folder(ahi, s3, ds, tmp_path / "in")
    assert result.job_status == "COMPLETED"
    failed = {line["inputFile"].rsplit("/", 1)[-1]: line["exception"] for line in result.failure}
    assert set(failed) == {"truncated.dcm", "notes.txt", "empty.dcm", "no_series.dcm"}
    assert "pixel data" in failed["truncated.dcm"]["message"].lower()
    assert failed["notes.txt"]["exceptionType"] == "InvalidDICOMFile"
    assert "(0020,000E) Series Instance UID is missing" in failed["no_series.dcm"]["message"]
    succeeded = {line["inputFile"].rsplit("/", 1)[-1] for line in result.success}
    assert succeeded == {p.name for p in good.paths}
    summary = result.manifest["jobSummary"]
    assert summary["numberOfScannedFiles"] == 6 and summary["numberOfImportedFiles"] == 2
    assert summary["numberOfFilesWithCustomerError"] == 4


def test_job_fails_cleanly_without_input(env: dict[str, Any]) -> None:
    ahi, s3, ds = env["ahi"], env["s3"], env["datastore_id"]
    upload_folder(s3, Path(__file__).parent, "ahi-input", "unused")  # make sure the bucket exists
    result = run_import(ahi, s3, ds, "ahi-input", f"nothing-here/{uuid.uuid4().hex}")
    assert result.job_status == "FAILED"
    assert "no objects under inputS3Uri" in result.job_properties["message"]
    missing_bucket = run_import(ahi, s3, ds, "no-such-bucket-xyz", "in", output_prefix="out")
    assert (
        missing_bucket.job_status == "FAILED" and "NoSuchBucket" in missing_bucket.job_properties["message"]
    )


def test_attributes_that_differ_between_instances_stay_per_instance(
    env: dict[str, Any], tmp_path: Path
) -> None:
    ahi, s3, ds = env["ahi"], env["s3"], env["datastore_id"]
    series = write_series(tmp_path / "src", SeriesSpec(slices=2, rows=8, columns=8))
    second = pydicom.dcmread(series.paths[1])
    second.SeriesDescription = "edited on the modality"
    second.PatientSex = "F"
    second.save_as(series.paths[1])
    image_set = import_folder(ahi, s3, ds, tmp_path / "src").image_set_ids[0]
    doc = read_metadata(ahi, ds, image_set)
    series_doc = doc["Study"]["Series"][series.series_uid]
    assert "SeriesDescription" not in series_doc["DICOM"] and "PatientSex" not in doc["Patient"]["DICOM"]
    assert series_doc["DICOM"]["Modality"] == "CT" and doc["Patient"]["DICOM"]["PatientID"] == "SYN-0001"
    first_uid, second_uid = series.sop_instance_uids
    assert series_doc["Instances"][first_uid]["DICOM"]["SeriesDescription"] == "synthetic axial"
    assert series_doc["Instances"][second_uid]["DICOM"]["SeriesDescription"] == "edited on the modality"
    assert series_doc["Instances"][second_uid]["DICOM"]["PatientSex"] == "F"

"""The AWS HealthImaging API surface of ahi-local through boto3: datastores, search and pagination, versions,
updates, copies, deletes, tags, and the error codes of bad requests."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from devstack.clients import ahi_client, s3_client
from devstack.importing import create_datastore, import_folder, wait_image_set_settled
from devstack.synthetic import SeriesSpec, write_series
from tests.support.ahi_metadata import read_metadata

MISSING_ID = "0" * 32
N_SERIES = 125


@pytest.fixture(scope="module")
def ahi(ahi_local: str) -> Any:
    return ahi_client(ahi_local, max_attempts=1)


@pytest.fixture(scope="module")
def many(ahi: Any, moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A datastore with 125 one-slice series: 5 patients × 25 series, alternating accession numbers."""
    folder = tmp_path_factory.mktemp("many")
    study_uids = {}
    for i in range(N_SERIES):
        patient = f"PAT{i % 5}"
        study_uids.setdefault(patient, f"1.2.826.0.1.3680043.10.1.{i % 5}")
        spec = SeriesSpec(
            slices=1,
            rows=8,
            columns=8,
            patient_id=patient,
            study_uid=study_uids[patient],
            accession_number=f"ACC{i % 5}",
            study_date=f"2024010{1 + i % 5}",
            series_number=i + 1,
            seed=i,
        )
        write_series(folder, spec)
    datastore_id = create_datastore(ahi, "many")
    result = import_folder(ahi, s3_client(moto_s3), datastore_id, folder)
    assert result.job_status == "COMPLETED" and not result.failure
    return {"datastore_id": datastore_id, "result": result, "study_uids": study_uids}


@pytest.fixture()
def small(ahi: Any, moto_s3: str, tmp_path: Any) -> dict[str, Any]:
    """A fresh datastore with one 3-slice series."""
    series = write_series(tmp_path / "src", SeriesSpec(slices=3, rows=16, columns=16))
    datastore_id = create_datastore(ahi, "small")
    result = import_folder(ahi, s3_client(moto_s3), datastore_id, tmp_path / "src")
    return {"datastore_id": datastore_id, "image_set_id": result.image_set_ids[0], "series": series}


def _search(ahi: Any, datastore_id: str, criteria: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    paginator = ahi.get_paginator("search_image_sets")
    kwargs: dict[str, Any] = {"datastoreId": datastore_id}
    if criteria:
        kwargs["searchCriteria"] = criteria
    return [s for page in paginator.paginate(**kwargs) for s in page["imageSetsMetadataSummaries"]]


def test_paginator_walks_more_than_120_image_sets(ahi: Any, many: dict[str, Any]) -> None:
    pages = list(ahi.get_paginator("search_image_sets").paginate(datastoreId=many["datastore_id"]))
    ids = [s["imageSetId"] for p in pages for s in p["imageSetsMetadataSummaries"]]
    assert len(ids) == len(set(ids)) == N_SERIES
    assert len(pages) == 3 and all(len(p["imageSetsMetadataSummaries"]) <= 50 for p in pages)
    assert set(ids) == set(many["result"].image_set_ids)
    small_pages = list(
        ahi.get_paginator("search_image_sets").paginate(
            datastoreId=many["datastore_id"], PaginationConfig={"PageSize": 7}
        )
    )
    assert len(small_pages) == 18


def test_search_filters(ahi: Any, many: dict[str, Any]) -> None:
    ds = many["datastore_id"]
    by_patient = _search(
        ahi, ds, {"filters": [{"values": [{"DICOMPatientId": "PAT3"}], "operator": "EQUAL"}]}
    )
    assert len(by_patient) == 25 and {s["DICOMTags"]["DICOMPatientId"] for s in by_patient} == {"PAT3"}
    study = many["study_uids"]["PAT1"]
    by_study = _search(
        ahi, ds, {"filters": [{"values": [{"DICOMStudyInstanceUID": study}], "operator": "EQUAL"}]}
    )
    assert len(by_study) == 25
    assert by_study[0]["DICOMTags"]["DICOMNumberOfStudyRelatedSeries"] == 25
    assert by_study[0]["DICOMTags"]["DICOMNumberOfStudyRelatedInstances"] == 25
    by_accession = _search(
        ahi, ds, {"filters": [{"values": [{"DICOMAccessionNumber": "ACC2"}], "operator": "EQUAL"}]}
    )
    assert {s["DICOMTags"]["DICOMAccessionNumber"] for s in by_accession} == {"ACC2"} and len(
        by_accession
    ) == 25
    series_uid = by_accession[0]["DICOMTags"]["DICOMSeriesInstanceUID"]
    by_series = _search(
        ahi, ds, {"filters": [{"values": [{"DICOMSeriesInstanceUID": series_uid}], "operator": "EQUAL"}]}
    )
    assert [s["imageSetId"] for s in by_series] == [by_accession[0]["imageSetId"]]
    dates = {
        "filters": [
            {
                "operator": "BETWEEN",
                "values": [
                    {"DICOMStudyDateAndTime": {"DICOMStudyDate": "20240102", "DICOMStudyTime": "000000"}},
                    {"DICOMStudyDateAndTime": {"DICOMStudyDate": "20240103", "DICOMStudyTime": "235959"}},
                ],
            }
        ]
    }
    between = _search(ahi, ds, dates)
    assert len(between) == 50 and {s["DICOMTags"]["DICOMStudyDate"] for s in between} == {
        "20240102",
        "20240103",
    }
    now = datetime.now(timezone.utc)
    recent = _search(
        ahi,
        ds,
        {
            "filters": [
                {
                    "operator": "BETWEEN",
                    "values": [
                        {"updatedAt": now - timedelta(hours=1)},
                        {"updatedAt": now + timedelta(minutes=1)},
                    ],
                }
            ]
        },
    )
    assert len(recent) == N_SERIES
    future = _search(
        ahi,
        ds,
        {
            "filters": [
                {
                    "operator": "BETWEEN",
                    "values": [
                        {"createdAt": now + timedelta(hours=1)},
                        {"createdAt": now + timedelta(hours=2)},
                    ],
                }
            ]
        },
    )
    assert future == []


def test_search_sort_and_bad_criteria(ahi: Any, many: dict[str, Any]) -> None:
    ds = many["datastore_id"]
    asc = ahi.search_image_sets(
        datastoreId=ds, maxResults=50, searchCriteria={"sort": {"sortField": "updatedAt", "sortOrder": "ASC"}}
    )["imageSetsMetadataSummaries"]
    stamps = [s["updatedAt"] for s in asc]
    assert stamps == sorted(stamps)
    with pytest.raises(ClientError, match="ValidationException.*maxResults"):
        ahi.search_image_sets(datastoreId=ds, maxResults=51)
    with pytest.raises(ClientError, match="ValidationException.*EQUAL takes exactly one value"):
        ahi.search_image_sets(
            datastoreId=ds,
            searchCriteria={
                "filters": [
                    {"operator": "EQUAL", "values": [{"DICOMPatientId": "A"}, {"DICOMPatientId": "B"}]}
                ]
            },
        )
    with pytest.raises(ClientError, match="ValidationException.*nextToken"):
        ahi.search_image_sets(datastoreId=ds, nextToken="bm90LWEtdG9rZW4=")


def test_datastore_lifecycle_and_errors(ahi: Any) -> None:
    name = f"life-{uuid.uuid4().hex[:8]}"
    created = ahi.create_datastore(datastoreName=name, clientToken=uuid.uuid4().hex, tags={"team": "ai"})
    ds = created["datastoreId"]
    assert created["datastoreStatus"] == "CREATING"
    with pytest.raises(ahi.exceptions.ConflictException, match=f"datastore {ds} is CREATING"):
        ahi.start_dicom_import_job(
            datastoreId=ds, dataAccessRoleArn="arn:aws:iam::123456789012:role/x", clientToken="early",
            inputS3Uri="s3://bucket/in/", outputS3Uri="s3://bucket/out/",
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while (props := ahi.get_datastore(datastoreId=ds)["datastoreProperties"])["datastoreStatus"] != "ACTIVE":
        assert time.monotonic() < deadline, props
        time.sleep(0.1)
    assert props["datastoreName"] == name
    assert props["datastoreArn"] == f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{ds}"
    listed = [d for p in ahi.get_paginator("list_datastores").paginate() for d in p["datastoreSummaries"]]
    assert ds in {d["datastoreId"] for d in listed}
    assert ahi.list_tags_for_resource(resourceArn=props["datastoreArn"])["tags"] == {"team": "ai"}
    assert ahi.delete_datastore(datastoreId=ds)["datastoreStatus"] == "DELETING"
    with pytest.raises(ahi.exceptions.ResourceNotFoundException, match=f"datastore {ds} not found"):
        ahi.get_datastore(datastoreId=ds)
    with pytest.raises(ahi.exceptions.ValidationException, match="Value 'NOT-AN-ID' at 'datastoreId' failed"):
        ahi.get_datastore(datastoreId="NOT-AN-ID")
    with pytest.raises(ParamValidationError, match="datastoreName"):
        ahi.create_datastore(datastoreName="", clientToken="x")


def test_error_codes_for_image_sets(ahi: Any, small: dict[str, Any]) -> None:
    ds, image_set = small["datastore_id"], small["image_set_id"]
    with pytest.raises(ahi.exceptions.ResourceNotFoundException, match=f"image set {MISSING_ID} not found"):
        ahi.get_image_set(datastoreId=ds, imageSetId=MISSING_ID)
    with pytest.raises(ahi.exceptions.ResourceNotFoundException, match=f"datastore {MISSING_ID} not found"):
        ahi.get_image_set_metadata(datastoreId=MISSING_ID, imageSetId=image_set)
    with pytest.raises(ahi.exceptions.ResourceNotFoundException, match=f"image frame {MISSING_ID} not found"):
        ahi.get_image_frame(
            datastoreId=ds, imageSetId=image_set, imageFrameInformation={"imageFrameId": MISSING_ID}
        )
    bad_frame = "Value 'xyz' at 'imageFrameInformation.imageFrameId' failed"
    with pytest.raises(ahi.exceptions.ValidationException, match=bad_frame):
        ahi.get_image_frame(
            datastoreId=ds, imageSetId=image_set, imageFrameInformation={"imageFrameId": "xyz"}
        )
    with pytest.raises(ahi.exceptions.ValidationException, match="Value 'Bad' at 'imageSetId' failed"):
        ahi.get_image_set(datastoreId=ds, imageSetId="Bad")
    with pytest.raises(ahi.exceptions.ResourceNotFoundException, match="version 9 of image set"):
        ahi.get_image_set(datastoreId=ds, imageSetId=image_set, versionId="9")
    with pytest.raises(ahi.exceptions.ConflictException, match="still holds 1 image sets"):
        ahi.delete_datastore(datastoreId=ds)
    with pytest.raises(ahi.exceptions.ResourceNotFoundException, match="import job"):
        ahi.get_dicom_import_job(datastoreId=ds, jobId="abc")
    with pytest.raises(ahi.exceptions.ValidationException, match="inputS3Uri"):
        ahi.start_dicom_import_job(
            datastoreId=ds,
            dataAccessRoleArn="arn:aws:iam::123456789012:role/x",
            clientToken="t1",
            inputS3Uri="http://not-s3",
            outputS3Uri="s3://bucket/out/",
        )


def test_raw_http_errors_are_aws_shaped(ahi_local: str) -> None:
    import requests

    resp = requests.post(f"{ahi_local}/datastore", data=b"{not json", timeout=10)
    assert resp.status_code == 400 and resp.headers["x-amzn-ErrorType"] == "ValidationException"
    assert "not JSON" in resp.json()["message"]
    resp = requests.post(f"{ahi_local}/datastore", json={"clientToken": "a", "bogus": 1}, timeout=10)
    assert resp.status_code == 400 and "unknown request members ['bogus']" in resp.json()["message"]
    resp = requests.get(f"{ahi_local}/no/such/route", timeout=10)
    assert resp.status_code == 404 and resp.headers["x-amzn-ErrorType"] == "UnknownOperationException"


def test_image_set_properties_and_metadata_layout(ahi: Any, small: dict[str, Any]) -> None:
    ds, image_set = small["datastore_id"], small["image_set_id"]
    props = ahi.get_image_set(datastoreId=ds, imageSetId=image_set)
    assert props["versionId"] == "1" and props["imageSetState"] == "ACTIVE" and props["isPrimary"] is True
    assert props["imageSetArn"].endswith(f"datastore/{ds}/imageset/{image_set}")
    raw = ahi.get_image_set_metadata(datastoreId=ds, imageSetId=image_set)
    assert raw["contentEncoding"] == "gzip" and raw["contentType"] == "application/json"
    doc = read_metadata(ahi, ds, image_set)
    assert doc["DatastoreID"] == ds and doc["ImageSetID"] == image_set and doc["SchemaVersion"] == "1.1"
    series = doc["Study"]["Series"][small["series"].series_uid]
    inst = series["Instances"][small["series"].sop_instance_uids[0]]
    assert inst["DICOMVRs"]["00091011"] == "DS" and inst["DICOM"]["00091012"] == "AAEC/g=="
    assert inst["StoredTransferSyntaxUID"] == "1.2.840.10008.1.2.4.202"
    assert set(inst["ImageFrames"][0]) == {
        "ID",
        "FrameSizeInBytes",
        "MinPixelValue",
        "MaxPixelValue",
        "PixelDataChecksumFromBaseToFullResolution",
    }
    assert doc["Patient"]["DICOM"]["PatientID"] == "SYN-0001"


def _blob(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def test_update_metadata_makes_versions(ahi: Any, small: dict[str, Any]) -> None:
    ds, image_set, series = small["datastore_id"], small["image_set_id"], small["series"]
    updated = ahi.update_image_set_metadata(
        datastoreId=ds,
        imageSetId=image_set,
        latestVersionId="1",
        updateImageSetMetadataUpdates={
            "DICOMUpdates": {
                "updatableAttributes": _blob(
                    {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "renamed"}}}
                )
            }
        },
    )
    assert updated["latestVersionId"] == "2"
    assert (updated["imageSetState"], updated["imageSetWorkflowStatus"]) == ("LOCKED", "UPDATING")
    settled = wait_image_set_settled(ahi, ds, image_set)
    assert (settled["imageSetState"], settled["imageSetWorkflowStatus"]) == ("ACTIVE", "UPDATED")
    assert read_metadata(ahi, ds, image_set)["Study"]["DICOM"]["StudyDescription"] == "renamed"
    assert read_metadata(ahi, ds, image_set, "1")["Study"]["DICOM"]["StudyDescription"] == "synthetic study"
    removed_sop = series.sop_instance_uids[2]
    removed = ahi.update_image_set_metadata(
        datastoreId=ds,
        imageSetId=image_set,
        latestVersionId="2",
        updateImageSetMetadataUpdates={
            "DICOMUpdates": {
                "removableAttributes": _blob(
                    {
                        "SchemaVersion": 1.1,
                        "Study": {"Series": {series.series_uid: {"Instances": {removed_sop: {}}}}},
                    }
                )
            }
        },
    )
    wait_image_set_settled(ahi, ds, removed["imageSetId"])
    doc = read_metadata(ahi, ds, image_set)
    assert removed_sop not in doc["Study"]["Series"][series.series_uid]["Instances"]
    versions = [
        v
        for p in ahi.get_paginator("list_image_set_versions").paginate(datastoreId=ds, imageSetId=image_set)
        for v in p["imageSetPropertiesList"]
    ]
    assert [v["versionId"] for v in versions] == ["3", "2", "1"]
    with pytest.raises(ahi.exceptions.ConflictException, match="latest version of image set .* is 3, not 1"):
        ahi.update_image_set_metadata(
            datastoreId=ds,
            imageSetId=image_set,
            latestVersionId="1",
            updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": _blob({"Patient": {}})}},
        )
    with pytest.raises(
        ahi.exceptions.ValidationException, match="removableAttributes names Patient.DICOM.Nope"
    ):
        ahi.update_image_set_metadata(
            datastoreId=ds,
            imageSetId=image_set,
            latestVersionId="3",
            updateImageSetMetadataUpdates={
                "DICOMUpdates": {"removableAttributes": _blob({"Patient": {"DICOM": {"Nope": "x"}}})}
            },
        )
    reverted = ahi.update_image_set_metadata(
        datastoreId=ds,
        imageSetId=image_set,
        latestVersionId="3",
        updateImageSetMetadataUpdates={"revertToVersionId": "1"},
    )
    assert reverted["latestVersionId"] == "4"
    wait_image_set_settled(ahi, ds, image_set)
    assert read_metadata(ahi, ds, image_set)["Study"]["DICOM"]["StudyDescription"] == "synthetic study"


def test_copy_image_set_shares_frames(ahi: Any, small: dict[str, Any]) -> None:
    ds, image_set, series = small["datastore_id"], small["image_set_id"], small["series"]
    copied = ahi.copy_image_set(
        datastoreId=ds,
        sourceImageSetId=image_set,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}},
    )
    dest = copied["destinationImageSetProperties"]["imageSetId"]
    assert copied["destinationImageSetProperties"]["imageSetState"] == "LOCKED"
    assert copied["sourceImageSetProperties"]["imageSetWorkflowStatus"] == "COPYING_WITH_READ_ONLY_ACCESS"
    assert wait_image_set_settled(ahi, ds, dest)["imageSetWorkflowStatus"] == "COPIED"
    wait_image_set_settled(ahi, ds, image_set)
    assert dest != image_set and copied["sourceImageSetProperties"]["imageSetId"] == image_set
    doc = read_metadata(ahi, ds, dest)
    inst = doc["Study"]["Series"][series.series_uid]["Instances"][series.sop_instance_uids[0]]
    frame = ahi.get_image_frame(
        datastoreId=ds, imageSetId=dest, imageFrameInformation={"imageFrameId": inst["ImageFrames"][0]["ID"]}
    )
    assert frame["contentType"] == "image/jph" and len(frame["imageFrameBlob"].read()) > 0
    assert ahi.get_image_set(datastoreId=ds, imageSetId=dest)["isPrimary"] is False
    one = json.dumps(
        {
            "SchemaVersion": "1.1",
            "Study": {"Series": {series.series_uid: {"Instances": {series.sop_instance_uids[1]: {}}}}},
        }
    )
    partial = ahi.copy_image_set(
        datastoreId=ds,
        sourceImageSetId=image_set,
        copyImageSetInformation={
            "sourceImageSet": {"latestVersionId": "1", "DICOMCopies": {"copiableAttributes": one}},
            "destinationImageSet": {"imageSetId": dest, "latestVersionId": "1"},
        },
    )
    assert partial["destinationImageSetProperties"]["latestVersionId"] == "2"
    wait_image_set_settled(ahi, ds, image_set)
    with pytest.raises(ahi.exceptions.ConflictException, match="not 7"):
        ahi.copy_image_set(
            datastoreId=ds,
            sourceImageSetId=image_set,
            copyImageSetInformation={"sourceImageSet": {"latestVersionId": "7"}},
        )


def test_delete_image_set_and_then_datastore(ahi: Any, small: dict[str, Any]) -> None:
    ds, image_set = small["datastore_id"], small["image_set_id"]
    frame_id = read_metadata(ahi, ds, image_set)["Study"]["Series"][small["series"].series_uid]["Instances"][
        small["series"].sop_instance_uids[0]
    ]["ImageFrames"][0]["ID"]
    deleted = ahi.delete_image_set(datastoreId=ds, imageSetId=image_set)
    assert (deleted["imageSetState"], deleted["imageSetWorkflowStatus"]) == ("LOCKED", "DELETING")
    assert wait_image_set_settled(ahi, ds, image_set)["imageSetState"] == "DELETED"
    with pytest.raises(ahi.exceptions.ResourceNotFoundException, match=f"image set {image_set} not found"):
        ahi.get_image_frame(
            datastoreId=ds, imageSetId=image_set, imageFrameInformation={"imageFrameId": frame_id}
        )
    assert _search(ahi, ds) == []
    ahi.delete_datastore(datastoreId=ds)


def test_tags_on_image_sets(ahi: Any, small: dict[str, Any]) -> None:
    arn = ahi.get_image_set(datastoreId=small["datastore_id"], imageSetId=small["image_set_id"])[
        "imageSetArn"
    ]
    ahi.tag_resource(resourceArn=arn, tags={"a": "1", "b": "2"})
    ahi.untag_resource(resourceArn=arn, tagKeys=["a"])
    assert ahi.list_tags_for_resource(resourceArn=arn)["tags"] == {"b": "2"}
    missing = arn.rsplit("/", 1)[0] + "/" + MISSING_ID
    with pytest.raises(ahi.exceptions.ResourceNotFoundException, match="resource .* not found"):
        ahi.list_tags_for_resource(resourceArn=missing)
    with pytest.raises(ahi.exceptions.ValidationException, match="at 'resourceArn' failed to satisfy"):
        ahi.tag_resource(resourceArn="arn:aws:s3:::bucket", tags={"a": "1"})


def test_import_job_listing(ahi: Any, many: dict[str, Any]) -> None:
    jobs = [
        j
        for p in ahi.get_paginator("list_dicom_import_jobs").paginate(datastoreId=many["datastore_id"])
        for j in p["jobSummaries"]
    ]
    assert [j["jobId"] for j in jobs] == [many["result"].job_id] and jobs[0]["jobStatus"] == "COMPLETED"
    completed = ahi.list_dicom_import_jobs(datastoreId=many["datastore_id"], jobStatus="FAILED")[
        "jobSummaries"
    ]
    assert completed == []

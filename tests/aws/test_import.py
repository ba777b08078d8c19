"""``import`` against the real ``ahi-local`` service reading from a real moto S3 server (two processes).

Also runs ``cleanup --data`` on what the import created: image sets, datastore and S3 prefixes.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from devstack.clients import ahi_client, s3_client
from devstack.synthetic import SeriesSpec, write_series
from scripts.aws.session import AwsCliError

NAME = "imp"
BUCKET = "ahi-spleen-import-test"


@pytest.fixture
def run_import(ahi_spleen, ahi_local: str, moto_s3: str):
    """``ahi-spleen <cmd>`` with S3 on the moto server ahi-local reads from, and AHI on ahi-local."""

    def run(*argv: str) -> dict:
        return ahi_spleen(
            *argv, "--name", NAME, "--s3-endpoint-url", moto_s3, "--ahi-endpoint-url", ahi_local
        )

    return run


def test_import_reports_image_sets_and_failures_and_is_idempotent(
    run_import, ahi_local: str, moto_s3: str, tmp_path: Path
) -> None:
    folder = tmp_path / "dicom"
    series = write_series(folder / "ct", SeriesSpec(slices=6, rows=32, columns=32))
    (folder / "notes.txt").write_text("not a DICOM file")

    ahi = ahi_client(ahi_local)
    dry = run_import(
        "import", str(folder), "--bucket", BUCKET, "--create-datastore", "--create-roles", "--dry-run"
    )
    operations = [c.split("(")[0] for c in dry["would_call"]]
    assert operations.count("s3.upload_file") == 7
    assert {
        "medical-imaging.create_datastore",
        "iam.create_role",
        "medical-imaging.start_dicom_import_job",
    } <= set(operations)
    assert f"{NAME}-datastore" not in {
        d["datastoreName"] for d in ahi.list_datastores()["datastoreSummaries"]
    }

    out = run_import("import", str(folder), "--bucket", BUCKET, "--create-datastore", "--create-roles")
    result = out["result"]
    assert result["status"] == "COMPLETED"
    assert result["uploaded_files"] == 7
    assert result["reused_job"] is False
    (image_set_id,) = result["image_set_ids"]
    assert len(result["success_lines"]) == 6
    (failure,) = result["failures"]
    assert failure["input_file"].endswith("/notes.txt")
    assert failure["reason"].startswith("InvalidDICOMFile: not a DICOM Part 10 file")

    datastore_id = result["datastore_id"]
    props = ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]
    assert props["datastoreName"] == f"{NAME}-datastore"
    found = ahi.search_image_sets(datastoreId=datastore_id)["imageSetsMetadataSummaries"]
    assert [s["imageSetId"] for s in found] == [image_set_id]
    blob = ahi.get_image_set_metadata(datastoreId=datastore_id, imageSetId=image_set_id)[
        "imageSetMetadataBlob"
    ]
    metadata = json.loads(gzip.decompress(blob.read()))
    assert list(metadata["Study"]["Series"]) == [series.series_uid]
    assert sorted(metadata["Study"]["Series"][series.series_uid]["Instances"]) == sorted(
        series.sop_instance_uids
    )

    # the success lines name the image set each uploaded file landed in
    s3 = s3_client(moto_s3)
    input_prefix = result["input_uri"].removeprefix(f"s3://{BUCKET}/")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=input_prefix)["Contents"]}
    assert len(keys) == 7

    again = run_import("import", str(folder), "--bucket", BUCKET, "--create-datastore", "--create-roles")
    assert again["changes"] == []
    assert again["result"]["reused_job"] is True
    assert again["result"]["job_id"] == result["job_id"]
    assert again["result"]["uploaded_files"] == 0
    assert again["result"]["image_set_ids"] == [image_set_id]
    assert [
        s["imageSetId"] for s in ahi.search_image_sets(datastoreId=datastore_id)["imageSetsMetadataSummaries"]
    ] == [image_set_id]

    cleaned = run_import("cleanup", "--data", "--roles")
    deleted = " ".join(cleaned["result"]["deleted"])
    assert f"image set {image_set_id}" in deleted
    assert f"datastore {datastore_id}" in deleted
    status = [
        d["datastoreStatus"]
        for d in ahi.list_datastores()["datastoreSummaries"]
        if d["datastoreId"] == datastore_id
    ]
    assert status in ([], ["DELETED"], ["DELETING"])
    # the bucket was created by the import and is now empty, so it is gone too
    assert BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_import_needs_a_datastore_choice(run_import, tmp_path: Path) -> None:
    write_series(tmp_path / "d", SeriesSpec(slices=1, rows=16, columns=16))
    with pytest.raises(AwsCliError, match=r"pass --datastore-id ID, or --create-datastore"):
        run_import("import", str(tmp_path / "d"), "--bucket", BUCKET)


def test_import_of_an_empty_folder_is_refused(run_import, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AwsCliError, match=r"holds no files; nothing to import"):
        run_import(
            "import",
            str(tmp_path / "empty"),
            "--bucket",
            BUCKET,
            "--datastore-id",
            "0" * 32,
            "--create-roles",
        )

"""ahi-local through the AWS CLI v1 (a client we did not write, with its own vendored botocore and model):
every operation, with the environment ``ahi-local serve`` prints at start-up, and AWS's answers to bad input,
LOCKED image sets and job output locations."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path
from typing import Any

from ahi_connector.import_jobs import wait_for_import_job
from devstack.clients import s3_client
from devstack.importing import DEFAULT_ROLE_ARN as ROLE_ARN
from devstack.importing import ensure_bucket, upload_folder, wait_image_set_settled
from devstack.synthetic import SeriesSpec, write_series
from tests.fidelity.conftest import aws_cli, wait_datastore_active

BUCKET = "fidelity-cli"
MI = "medical-imaging"


def _error(result: dict[str, Any]) -> str:
    assert result["rc"] != 0, f"{result['argv']} succeeded: {result['stdout'][:300]}"
    return str(result["stderr"])


def test_without_host_prefix_setting_the_cli_cannot_reach_the_data_plane(cli_env: dict[str, str]) -> None:
    """Why ``ahi-local serve`` prints AWS_DISABLE_HOST_PREFIX_INJECTION=true: the CLI otherwise sends
    data-plane calls to ``runtime-127.0.0.1``."""
    env = {k: v for k, v in cli_env.items() if k != "AWS_DISABLE_HOST_PREFIX_INJECTION"}
    env["AWS_DISABLE_HOST_PREFIX_INJECTION"] = "false"
    [search] = aws_cli([[MI, "search-image-sets", "--datastore-id", "0" * 32]], env)
    assert "runtime-127.0.0.1" in _error(search)
    assert set(cli_env) == {
        "AWS_ENDPOINT_URL_MEDICAL_IMAGING",
        "AWS_DISABLE_HOST_PREFIX_INJECTION",
        "AWS_DEFAULT_REGION",
    }


def test_every_operation_through_the_aws_cli(
    cli_env: dict[str, str], ahi: Any, moto_s3: str, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex
    created, again, bad_name, bad_kms = aws_cli(
        [
            [MI, "create-datastore", "--datastore-name", "fidelity-cli", "--client-token", token],
            [MI, "create-datastore", "--datastore-name", "fidelity-cli", "--client-token", token],
            [MI, "create-datastore", "--datastore-name", "bad name with spaces!", "--client-token", "t2"],
            [MI, "create-datastore", "--kms-key-arn", "not-an-arn", "--client-token", "t3"],
        ],
        cli_env,
    )
    ds = created.json["datastoreId"]
    assert created.json["datastoreStatus"] == "CREATING"
    assert again.json["datastoreId"] == ds  # idempotent on clientToken, as AWS
    assert "ValidationException" in _error(bad_name) and "at 'datastoreName'" in _error(bad_name)
    assert "at 'kmsKeyArn'" in _error(bad_kms)

    wait_datastore_active(ahi, ds)
    series = write_series(tmp_path / "src", SeriesSpec(slices=2, rows=16, columns=16))
    s3 = s3_client(moto_s3)
    ensure_bucket(s3, BUCKET)
    upload_folder(s3, tmp_path / "src", BUCKET, f"{ds}/in")
    out_uri = f"s3://{BUCKET}/{ds}/out/"
    start = [MI, "start-dicom-import-job", "--datastore-id", ds, "--input-s3-uri", f"s3://{BUCKET}/{ds}/in/"]
    got, listed, started, bad_role = aws_cli(
        [
            [MI, "get-datastore", "--datastore-id", ds],
            [MI, "list-datastores"],
            [*start, "--output-s3-uri", out_uri, "--data-access-role-arn", ROLE_ARN, "--client-token", "j1"],
            [*start, "--output-s3-uri", out_uri, "--data-access-role-arn", "this-is-not-an-iam-role-arn",
             "--client-token", "j2"],
        ],
        cli_env,
    )  # fmt: skip
    assert got.json["datastoreProperties"]["datastoreStatus"] == "ACTIVE"
    assert ds in {d["datastoreId"] for d in listed.json["datastoreSummaries"]}
    assert "at 'dataAccessRoleArn'" in _error(bad_role)
    job_id = started.json["jobId"]
    wait_for_import_job(ahi, ds, job_id, timeout_s=120)

    job, jobs, searched, three_filters = aws_cli(
        [
            [MI, "get-dicom-import-job", "--datastore-id", ds, "--job-id", job_id],
            [MI, "list-dicom-import-jobs", "--datastore-id", ds],
            [MI, "search-image-sets", "--datastore-id", ds, "--search-criteria", json.dumps(
                {"filters": [{"values": [{"DICOMPatientId": series.spec.patient_id}],
                              "operator": "EQUAL"}]})],
            [MI, "search-image-sets", "--datastore-id", ds, "--search-criteria", json.dumps(
                {"filters": [{"values": [{"DICOMPatientId": "x"}], "operator": "EQUAL"}] * 3})],
        ],
        cli_env,
    )  # fmt: skip
    props = job.json["jobProperties"]
    job_folder = f"{out_uri}{ds}-DicomImport-{job_id}/"
    assert props["jobStatus"] == "COMPLETED" and props["outputS3Uri"] == job_folder
    manifest_key = f"{job_folder[len(f's3://{BUCKET}/') :]}job-output-manifest.json"
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
    assert manifest["jobSummary"]["jobId"] == job_id
    assert [j["jobId"] for j in jobs.json["jobSummaries"]] == [job_id]
    [summary] = searched.json["imageSetsMetadataSummaries"]
    assert "Member must have length less than or equal to 2" in _error(three_filters)
    image_set = summary["imageSetId"]

    meta_path, frame_path = tmp_path / "meta.json.gz", tmp_path / "frame.jph"
    key = ["--datastore-id", ds, "--image-set-id", image_set]
    image, metadata_out, versions = aws_cli(
        [
            [MI, "get-image-set", *key],
            [MI, "get-image-set-metadata", *key, str(meta_path)],
            [MI, "list-image-set-versions", *key],
        ],
        cli_env,
    )
    arn = image.json["imageSetArn"]
    assert arn.startswith(f"arn:aws:medical-imaging:{cli_env['AWS_DEFAULT_REGION']}:")
    assert image.json["storageTier"] == "FREQUENT_ACCESS"
    document = json.loads(gzip.decompress(meta_path.read_bytes()))
    instance = document["Study"]["Series"][series.series_uid]["Instances"][series.sop_instance_uids[0]]
    frame_id = instance["ImageFrames"][0]["ID"]
    assert metadata_out.json["contentType"] == "application/json"
    assert [v["versionId"] for v in versions.json["imageSetPropertiesList"]] == ["1"]

    updates = json.dumps(
        {
            "DICOMUpdates": {
                "updatableAttributes": json.dumps(
                    {"SchemaVersion": "1.1", "Study": {"DICOM": {"StudyDescription": "via the AWS CLI"}}}
                )
            }
        }
    )
    frame, tagged, tags, untagged, updated, accessed = aws_cli(
        [
            [MI, "get-image-frame", *key, "--image-frame-information", f"imageFrameId={frame_id}",
             str(frame_path)],
            [MI, "tag-resource", "--resource-arn", arn, "--tags", "team=ai,stage=test"],
            [MI, "list-tags-for-resource", "--resource-arn", arn],
            [MI, "untag-resource", "--resource-arn", arn, "--tag-keys", "stage"],
            [MI, "update-image-set-metadata", *key, "--latest-version-id", "1",
             "--update-image-set-metadata-updates", updates],
            [MI, "get-image-set", *key],
        ],
        cli_env,
    )  # fmt: skip
    assert frame.json["contentType"] == "image/jph" and frame_path.stat().st_size > 0
    assert tagged["rc"] == untagged["rc"] == 0 and tags.json["tags"] == {"team": "ai", "stage": "test"}
    assert (updated.json["imageSetState"], updated.json["imageSetWorkflowStatus"]) == ("LOCKED", "UPDATING")
    assert accessed.json["lastAccessedAt"] >= image.json["createdAt"]
    assert wait_image_set_settled(ahi, ds, image_set)["imageSetWorkflowStatus"] == "UPDATED"

    copy_info = json.dumps({"sourceImageSet": {"latestVersionId": "2"}})
    copied, tags_after = aws_cli(
        [
            [MI, "copy-image-set", "--datastore-id", ds, "--source-image-set-id", image_set,
             "--copy-image-set-information", copy_info],
            [MI, "list-tags-for-resource", "--resource-arn", arn],
        ],
        cli_env,
    )  # fmt: skip
    assert copied.json["sourceImageSetProperties"]["imageSetState"] == "LOCKED"
    assert copied.json["destinationImageSetProperties"]["imageSetWorkflowStatus"] == "COPYING"
    assert tags_after.json["tags"] == {"team": "ai"}
    copy_id = copied.json["destinationImageSetProperties"]["imageSetId"]
    wait_image_set_settled(ahi, ds, copy_id)
    wait_image_set_settled(ahi, ds, image_set)

    deleted, deleted_copy = aws_cli(
        [
            [MI, "delete-image-set", *key],
            [MI, "delete-image-set", "--datastore-id", ds, "--image-set-id", copy_id],
        ],
        cli_env,
    )
    assert (deleted.json["imageSetState"], deleted.json["imageSetWorkflowStatus"]) == ("LOCKED", "DELETING")
    assert deleted_copy["rc"] == 0
    wait_image_set_settled(ahi, ds, image_set)
    wait_image_set_settled(ahi, ds, copy_id)
    [gone] = aws_cli([[MI, "delete-datastore", "--datastore-id", ds]], cli_env)
    assert gone.json["datastoreStatus"] == "DELETING"

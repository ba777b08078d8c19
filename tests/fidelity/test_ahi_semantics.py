"""AWS HealthImaging semantics that ahi-local models: LOCKED image sets, idempotent CreateDatastore, ARNs of
the configured region and account, and a newer botocore model whose extra operation never crashes the
server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.loaders
import pytest
import requests

from devstack.ahi_local.cli import serve_command
from devstack.clients import ahi_client, s3_client
from devstack.importing import create_datastore, import_folder
from devstack.processes import DUMMY_AWS_ENV, ServerProcess, free_port
from devstack.synthetic import SeriesSpec, write_series
from tests.fidelity.conftest import aws_cli

REGION, ACCOUNT = "eu-west-1", "111122223333"


@pytest.fixture(scope="module")
def slow_ahi(moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """ahi-local in another region and account whose transitions take 10 minutes: everything this module
    does to it happens while an image set is still LOCKED, whatever the machine's load."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra = ["--transition-seconds", "600", "--datastore-creation-seconds", "0.2", "--region", REGION,
             "--account-id", ACCOUNT]  # fmt: skip
    argv = serve_command(port, tmp_path_factory.mktemp("slow-ahi"), s3_endpoint_url=moto_s3, extra=extra)
    with ServerProcess("ahi-local-slow", argv, f"{url}/_local/health", url, env=DUMMY_AWS_ENV) as server:
        yield server


def _updates(description: str) -> dict[str, Any]:
    blob = json.dumps({"SchemaVersion": "1.1", "Study": {"DICOM": {"StudyDescription": description}}})
    return {"DICOMUpdates": {"updatableAttributes": blob.encode()}}


def test_writes_to_a_locked_image_set_are_conflicts(
    slow_ahi: ServerProcess, moto_s3: str, tmp_path: Path
) -> None:
    ahi = ahi_client(slow_ahi.url, max_attempts=1)
    write_series(tmp_path / "src", SeriesSpec(slices=2, rows=16, columns=16))
    ds = create_datastore(ahi, "locked")
    [image_set] = import_folder(ahi, s3_client(moto_s3), ds, tmp_path / "src").image_set_ids
    key = {"datastoreId": ds, "imageSetId": image_set}
    updated = ahi.update_image_set_metadata(
        **key, latestVersionId="1", updateImageSetMetadataUpdates=_updates("first")
    )
    assert (updated["imageSetState"], updated["imageSetWorkflowStatus"]) == ("LOCKED", "UPDATING")
    props = ahi.get_image_set(**key)
    assert (props["imageSetState"], props["imageSetWorkflowStatus"], props["versionId"]) == (
        "LOCKED",
        "UPDATING",
        "2",
    )
    locked = "is LOCKED \\(UPDATING\\); wait until GetImageSet answers imageSetState ACTIVE"
    with pytest.raises(ahi.exceptions.ConflictException, match=locked):
        ahi.update_image_set_metadata(**key, latestVersionId="2", updateImageSetMetadataUpdates=_updates("x"))
    with pytest.raises(ahi.exceptions.ConflictException, match=locked):
        ahi.copy_image_set(
            datastoreId=ds,
            sourceImageSetId=image_set,
            copyImageSetInformation={"sourceImageSet": {"latestVersionId": "2"}},
        )
    with pytest.raises(ahi.exceptions.ConflictException, match=locked):
        ahi.delete_image_set(**key)
    with pytest.raises(ahi.exceptions.ConflictException, match="still holds 1 image sets"):
        ahi.delete_datastore(datastoreId=ds)
    # Reads go on while LOCKED.
    assert ahi.get_image_set_metadata(**key)["contentType"] == "application/json"
    env = {
        "AWS_ENDPOINT_URL_MEDICAL_IMAGING": slow_ahi.url,
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        "AWS_DEFAULT_REGION": REGION,
    }
    [cli_update] = aws_cli(
        [["medical-imaging", "update-image-set-metadata", "--datastore-id", ds, "--image-set-id", image_set,
          "--latest-version-id", "2", "--update-image-set-metadata-updates", json.dumps(
              {"DICOMUpdates": {"updatableAttributes": "{}"}})]],
        env,
    )  # fmt: skip
    assert cli_update["rc"] != 0 and "ConflictException" in cli_update["stderr"]


def test_arns_carry_the_configured_region_and_account(slow_ahi: ServerProcess) -> None:
    ahi = ahi_client(slow_ahi.url, max_attempts=1)
    token = uuid.uuid4().hex
    created = ahi.create_datastore(datastoreName="arns", clientToken=token)
    ds = created["datastoreId"]
    arn = ahi.get_datastore(datastoreId=ds)["datastoreProperties"]["datastoreArn"]
    assert arn == f"arn:aws:medical-imaging:{REGION}:{ACCOUNT}:datastore/{ds}"
    ahi.tag_resource(resourceArn=arn, tags={"k": "v"})
    other_region = arn.replace(REGION, "us-east-1")
    with pytest.raises(ahi.exceptions.ResourceNotFoundException, match=f"region {REGION}, account {ACCOUNT}"):
        ahi.list_tags_for_resource(resourceArn=other_region)
    # CreateDatastore is idempotent on clientToken; the same token with other parameters is a conflict.
    assert ahi.create_datastore(datastoreName="arns", clientToken=token)["datastoreId"] == ds
    with pytest.raises(ahi.exceptions.ConflictException, match=f"clientToken {token} already created"):
        ahi.create_datastore(datastoreName="other-name", clientToken=token)


def test_a_newer_model_with_an_unknown_operation_is_served(tmp_path: Path) -> None:
    """botocore picks up models from AWS_DATA_PATH; an operation ahi-local does not know must not stop it
    from starting, and calling it answers an AWS-shaped error."""
    model = botocore.loaders.Loader().load_service_model("medical-imaging", "service-2")
    version = model["metadata"]["apiVersion"]
    model["operations"]["FrobnicateImageSet"] = {
        "name": "FrobnicateImageSet",
        "http": {"method": "POST", "requestUri": "/datastore/{datastoreId}/frobnicate", "responseCode": 200},
        "input": {"shape": "GetDatastoreRequest"},
        "output": {"shape": "GetDatastoreResponse"},
    }
    folder = tmp_path / "models" / "medical-imaging" / version
    folder.mkdir(parents=True)
    (folder / "service-2.json").write_text(json.dumps(model))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**DUMMY_AWS_ENV, "AWS_DATA_PATH": str(tmp_path / "models")}
    with ServerProcess("ahi-local-newer", serve_command(port, tmp_path / "data"), f"{url}/_local/health", url,
                       env=env):  # fmt: skip
        resp = requests.post(f"{url}/datastore/{'0' * 32}/frobnicate", timeout=10)
        assert resp.status_code == 404 and resp.headers["x-amzn-ErrorType"] == "UnknownOperationException"
        assert "FrobnicateImageSet is in botocore's medical-imaging model" in resp.json()["message"]
        assert requests.get(f"{url}/datastore", timeout=10).status_code == 200

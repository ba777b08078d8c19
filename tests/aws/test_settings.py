"""Names, settings validation, endpoint resolution and parsing helpers of the ``ahi-spleen`` CLI."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from ahi_connector.import_jobs import ImportJobError, JobOutput, failure_reason
from scripts.aws.deploy import EndpointSpec, GpuMultiModelError, is_accelerated
from scripts.aws.names import Names, settings_hash
from scripts.aws.scaling import ScalingSettings
from scripts.aws.session import Aws, AwsSettings, is_role_propagation_error, subset_equal
from scripts.aws.storage import parse_s3_uri
from tests.aws.conftest import BUCKET


@pytest.mark.parametrize("bad", ["", "Upper", "-lead", "trail-", "has_underscore", "x" * 33])
def test_invalid_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"is not valid: use 1-32 lower-case letters"):
        Names(bad)


def test_settings_hash_ignores_key_order_and_sees_values() -> None:
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})
    names = Names("x")
    assert names.model("mme", {"Image": "a"}) != names.model("mme", {"Image": "b"})


def test_subset_equal_compares_only_the_fields_we_set() -> None:
    assert subset_equal({"a": 1, "b": {"c": [1.0]}}, {"a": 1, "b": {"c": [1], "extra": 2}, "z": 0})
    assert not subset_equal({"a": 1}, {"a": 2})
    assert not subset_equal({"a": [1, 2]}, {"a": [1]})
    assert subset_equal({"privilegedMode": True}, {"privilegedMode": True})
    assert not subset_equal({"missing": 1}, {})


@pytest.mark.parametrize(
    ("instance_type", "accelerated"),
    [
        ("ml.m5.2xlarge", False),
        ("ml.c5.xlarge", False),
        ("ml.r5.large", False),
        ("ml.g4dn.xlarge", True),
        ("ml.g6e.xlarge", True),
        ("ml.p4d.24xlarge", True),
        ("ml.inf2.xlarge", True),
        ("ml.trn1.2xlarge", True),
    ],
)
def test_accelerated_instance_families(instance_type: str, accelerated: bool) -> None:
    assert is_accelerated(instance_type) is accelerated


def test_mme_spec_refuses_gpu_and_non_prefix_model_data() -> None:
    common = {"image": "i", "role_arn": "arn:aws:iam::1:role/r"}
    with pytest.raises(GpuMultiModelError, match=r"ml.p3.2xlarge is a GPU/accelerator type"):
        EndpointSpec(kind="mme", model_data_url="s3://b/p/", instance_type="ml.p3.2xlarge", **common)
    with pytest.raises(ValueError, match=r"multi-model ModelDataUrl must be an S3 prefix ending in '/'"):
        EndpointSpec(
            kind="mme", model_data_url="s3://b/p/model.tar.gz", instance_type="ml.m5.xlarge", **common
        )
    with pytest.raises(ValueError, match=r"single-model ModelDataUrl must be a .tar.gz object"):
        EndpointSpec(kind="rt", model_data_url="s3://b/p/", instance_type="ml.g5.xlarge", **common)


def test_scaling_settings_are_validated() -> None:
    assert ScalingSettings().min_capacity == 0
    with pytest.raises(ValueError, match=r"--backlog-target must be > 0"):
        ScalingSettings(backlog_target=0)


def test_endpoint_resolution_per_service_then_global() -> None:
    settings = AwsSettings(endpoint_url="http://all", service_endpoints={"sagemaker": "http://sm"})
    assert settings.endpoint_for("sagemaker") == "http://sm"
    assert settings.endpoint_for("s3") == "http://all"
    assert AwsSettings().endpoint_for("s3") is None  # boto3's own chain (AWS_ENDPOINT_URL_S3, ...) decides
    with pytest.raises(ValueError, match=r"unknown service\(s\) in endpoint overrides: \['sagemker'\]"):
        AwsSettings(service_endpoints={"sagemker": "http://x"})


def test_local_ahi_client_does_not_inject_the_runtime_host_prefix() -> None:
    aws = Aws(AwsSettings(region="us-east-1", service_endpoints={"medical-imaging": "http://127.0.0.1:1"}))
    assert aws.client("medical-imaging").meta.config.inject_host_prefix is False
    assert aws.client("sagemaker").meta.config.retries == {"mode": "standard", "total_max_attempts": 9}


def test_standard_endpoint_env_vars_are_honoured(
    aws_env: str, client, monkeypatch: pytest.MonkeyPatch, ahi_spleen
) -> None:
    """No --endpoint-url at all: AWS_ENDPOINT_URL_<SERVICE> (boto3's chain) routes every call to moto."""
    from scripts.aws import cli

    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env)
    code, text = cli.run(
        ["pipeline", "--name", "envx", "--bucket", BUCKET, "--create-roles", "--no-progress"]
    )
    assert code == 0, text
    assert client("codebuild").list_projects()["projects"] == ["envx-build"]


def test_failure_reason_and_image_set_id_parsing() -> None:
    line = {"inputFile": "s3://b/x.dcm", "exception": {"exceptionType": "InvalidDICOMFile", "message": "bad"}}
    assert failure_reason(line) == "InvalidDICOMFile: bad"
    assert failure_reason({"inputFile": "f", "reason": "why"}) == "why"
    lines = [
        {"importResponse": {"imageSetId": "a"}},
        {"importResponse": {"imageSetId": "a"}},
        {"importResponse": {"imageSetId": "b"}},
    ]
    assert JobOutput({}, lines, []).image_set_ids == ["a", "b"]
    with pytest.raises(ImportJobError, match=r"success.ndjson line 1 has no importResponse.imageSetId"):
        _ = JobOutput({}, [{"inputFile": "x"}], []).image_set_ids


def test_s3_uri_parsing() -> None:
    assert parse_s3_uri("s3://bucket/a/b.json") == ("bucket", "a/b.json")
    with pytest.raises(ValueError, match=r"'http://x/y' is not an S3 URI"):
        parse_s3_uri("http://x/y")


def test_role_propagation_errors_are_recognised() -> None:
    def client_error(code: str, message: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": message}}, "CreateProject")

    assert is_role_propagation_error(
        client_error(
            "InvalidInputException", "CodeBuild is not authorized to perform: sts:AssumeRole on arn:x"
        )
    )
    assert is_role_propagation_error(client_error("ValidationException", "Could not assume role arn:x"))
    assert not is_role_propagation_error(client_error("ValidationException", "Could not find model 'x'"))
    assert not is_role_propagation_error(ValueError("AssumeRole"))

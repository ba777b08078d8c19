"""``cleanup`` against a moto server: deletes everything the CLI created, keeps what it did not create."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.aws.conftest import BUCKET

NAME = "cln"


@pytest.fixture
def deployed(ahi_spleen, small_archive: Path, tmp_path: Path) -> None:
    """Everything: pipeline (+roles, bucket), source, model archive, MME, real-time and async (+SNS)
    endpoints."""
    common = ("--name", NAME, "--bucket", BUCKET)
    ahi_spleen("pipeline", *common, "--create-roles")
    src = tmp_path / "src"
    src.mkdir()
    (src / "buildspec.yml").write_text("version: 0.2\n")
    ahi_spleen("build", *common, "--source-dir", str(src))
    ahi_spleen("upload-model", *common, "--archive", str(small_archive))
    ahi_spleen("deploy-mme", *common, "--create-roles")
    ahi_spleen("deploy-realtime", *common)
    ahi_spleen("deploy-async", *common, "--sns")


@pytest.fixture
def deployed_mme(ahi_spleen, small_archive: Path) -> None:
    """Enough for the ownership checks: roles and bucket (via pipeline), archive, multi-model endpoint."""
    common = ("--name", NAME, "--bucket", BUCKET)
    ahi_spleen("pipeline", *common, "--create-roles")
    ahi_spleen("upload-model", *common, "--archive", str(small_archive))
    ahi_spleen("deploy-mme", *common, "--create-roles")


def _leftovers(client) -> dict[str, list]:
    sm, aas = client("sagemaker"), client("application-autoscaling")
    iam_roles = [r["RoleName"] for r in client("iam").list_roles()["Roles"] if r["RoleName"].startswith(NAME)]
    return {
        "endpoints": sm.list_endpoints()["Endpoints"],
        "configs": sm.list_endpoint_configs()["EndpointConfigs"],
        "models": sm.list_models()["Models"],
        "targets": aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"],
        "policies": aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"],
        "alarms": client("cloudwatch").describe_alarms()["MetricAlarms"],
        "dashboards": client("cloudwatch").list_dashboards()["DashboardEntries"],
        "topics": client("sns").list_topics()["Topics"],
        "repositories": client("ecr").describe_repositories()["repositories"],
        "projects": client("codebuild").list_projects()["projects"],
        "pipelines": client("codepipeline").list_pipelines()["pipelines"],
        "roles": iam_roles,
        "buckets": client("s3").list_buckets()["Buckets"],
    }


def test_cleanup_all_leaves_nothing(ahi_spleen, client, deployed) -> None:
    before = _leftovers(client)
    assert all(before.values()), {k: len(v) for k, v in before.items()}

    # the dry run lists the deletions and deletes nothing
    dry = ahi_spleen("cleanup", "--name", NAME, "--all", "--dry-run")
    operations = {c.split("(")[0] for c in dry["would_call"]}
    assert {
        "sagemaker.delete_endpoint",
        "sagemaker.delete_endpoint_config",
        "sagemaker.delete_model",
        "application-autoscaling.delete_scaling_policy",
        "application-autoscaling.deregister_scalable_target",
        "cloudwatch.delete_alarms",
        "cloudwatch.delete_dashboards",
        "sns.delete_topic",
        "codepipeline.delete_pipeline",
        "codebuild.delete_project",
        "ecr.delete_repository",
        "iam.delete_role",
        "s3.delete_objects",
    } <= operations
    assert json.dumps(_leftovers(client), default=str) == json.dumps(before, default=str)

    out = ahi_spleen("cleanup", "--name", NAME, "--all")
    assert out["result"]["kept"] == []
    assert {k: v for k, v in _leftovers(client).items() if v} == {}
    # nothing left to do on a second run
    assert ahi_spleen("cleanup", "--name", NAME, "--all")["changes"] == []


def test_default_cleanup_keeps_pipeline_roles_and_data(ahi_spleen, client, deployed) -> None:
    ahi_spleen("cleanup", "--name", NAME)
    left = {k: v for k, v in _leftovers(client).items() if v}
    assert sorted(left) == ["buckets", "pipelines", "projects", "repositories", "roles"]
    assert client("s3").head_object(Bucket=BUCKET, Key=f"{NAME}/models/model.tar.gz")["ContentLength"] > 0


def test_cleanup_never_deletes_what_it_did_not_create(ahi_spleen, client, deployed_mme) -> None:
    sm = client("sagemaker")
    role = client("iam").get_role(RoleName=f"{NAME}-sagemaker")["Role"]["Arn"]
    # look-alikes made by hand (no project tag): same name pattern, same prefix
    sm.create_model(
        ModelName=f"{NAME}-mme-0123abcd",
        ExecutionRoleArn=role,
        PrimaryContainer={"Image": "x", "ModelDataUrl": f"s3://{BUCKET}/other/"},
    )
    sm.create_model(
        ModelName=f"{NAME}-mme-89abcdef",
        ExecutionRoleArn=role,
        PrimaryContainer={"Image": "x", "ModelDataUrl": f"s3://{BUCKET}/other/"},
        Tags=[{"Key": "ahi-spleen-project", "Value": "another-deployment"}],
    )
    s3 = client("s3")
    s3.put_object(Bucket=BUCKET, Key="not-ours/data.bin", Body=b"keep me")

    out = ahi_spleen("cleanup", "--name", NAME, "--all")
    assert sorted(out["result"]["kept"]) == [f"model {NAME}-mme-0123abcd", f"model {NAME}-mme-89abcdef"]
    assert sorted(m["ModelName"] for m in sm.list_models()["Models"]) == [
        f"{NAME}-mme-0123abcd",
        f"{NAME}-mme-89abcdef",
    ]
    assert s3.get_object(Bucket=BUCKET, Key="not-ours/data.bin")["Body"].read() == b"keep me"  # bucket kept

    forced = ahi_spleen("cleanup", "--name", NAME, "--force")
    assert sorted(forced["result"]["deleted"]) == [f"model {NAME}-mme-0123abcd", f"model {NAME}-mme-89abcdef"]
    assert sm.list_models()["Models"] == []

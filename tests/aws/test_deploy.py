"""``upload-model``, ``deploy-mme``, ``deploy-realtime`` and ``deploy-async`` against a moto server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from scripts.aws import cli
from scripts.aws.deploy import GpuMultiModelError
from scripts.aws.session import AwsCliError
from tests.aws.conftest import BUCKET
from tests.aws.util import tags_of

NAME = "dep"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dep:latest"


@pytest.fixture
def uploaded(ahi_spleen, small_archive: Path) -> dict:
    """The small archive uploaded as the MME's model.tar.gz, and the ECR repository (via `pipeline`)."""
    ahi_spleen("pipeline", "--name", NAME, "--bucket", BUCKET, "--create-roles")
    return ahi_spleen("upload-model", "--name", NAME, "--bucket", BUCKET, "--archive", str(small_archive))


def _deploy(ahi_spleen, command: str, *extra: str) -> dict:
    return ahi_spleen(command, "--name", NAME, "--bucket", BUCKET, "--create-roles", *extra)


def test_upload_model_packages_with_model_package_and_uploads_under_the_mme_prefix(
    ahi_spleen, client, tmp_path: Path
) -> None:
    archive = tmp_path / "out" / "model.tar.gz"
    out = ahi_spleen("upload-model", "--name", NAME, "--bucket", BUCKET, "--archive", str(archive), "--build")
    assert out["result"]["s3_uri"] == f"s3://{BUCKET}/{NAME}/models/model.tar.gz"
    assert out["result"]["model_prefix_uri"] == f"s3://{BUCKET}/{NAME}/models/"
    body = client("s3").get_object(Bucket=BUCKET, Key=f"{NAME}/models/model.tar.gz")["Body"].read()
    assert body == archive.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
    for member in ("configs/metadata.json", "configs/inference.json", "models/model.ts"):
        assert f"spleen_ct_segmentation/{member}" in names

    again = ahi_spleen("upload-model", "--name", NAME, "--bucket", BUCKET, "--archive", str(archive))
    assert again["result"]["uploaded"] is False
    assert again["changes"] == []


def test_upload_model_replaces_a_changed_archive(ahi_spleen, client, small_archive: Path) -> None:
    ahi_spleen("upload-model", "--name", NAME, "--bucket", BUCKET, "--archive", str(small_archive))
    small_archive.write_bytes(small_archive.read_bytes() + b"\0" * 16)
    out = ahi_spleen("upload-model", "--name", NAME, "--bucket", BUCKET, "--archive", str(small_archive))
    assert out["result"]["uploaded"] is True
    head = client("s3").head_object(Bucket=BUCKET, Key=f"{NAME}/models/model.tar.gz")
    assert head["Metadata"]["sha256"] == hashlib.sha256(small_archive.read_bytes()).hexdigest()


def test_deploy_mme_creates_multimodel_endpoint_and_rerun_changes_nothing(
    ahi_spleen, client, uploaded
) -> None:
    out = _deploy(ahi_spleen, "deploy-mme", "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=2")
    result = out["result"]
    assert result["endpoint_name"] == f"{NAME}-mme"
    assert result["status"] == "InService"

    sm = client("sagemaker")
    model = sm.describe_model(ModelName=result["model_name"])
    container = model["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/{NAME}/models/"
    assert container["Image"] == IMAGE
    assert container["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"] == "2"
    assert container["Environment"]["SAGEMAKER_MULTI_MODEL"] == "true"
    assert container["Environment"]["SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"] == "600"
    assert model["ExecutionRoleArn"].endswith(f":role/{NAME}-sagemaker")

    config = sm.describe_endpoint_config(EndpointConfigName=result["config_name"])
    (variant,) = config["ProductionVariants"]
    assert variant["InstanceType"] == "ml.m5.2xlarge"
    assert variant["ModelName"] == result["model_name"]
    endpoint = sm.describe_endpoint(EndpointName=f"{NAME}-mme")
    assert endpoint["EndpointConfigName"] == result["config_name"]
    for arn in (model["ModelArn"], config["EndpointConfigArn"], endpoint["EndpointArn"]):
        assert tags_of(sm.list_tags(ResourceArn=arn)["Tags"])["ahi-spleen-project"] == NAME

    # a second run finds everything and changes nothing
    second = _deploy(ahi_spleen, "deploy-mme", "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=2")
    assert second["changes"] == []
    assert second["result"] == result
    assert sm.describe_endpoint(EndpointName=f"{NAME}-mme")["CreationTime"] == endpoint["CreationTime"]
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [result["model_name"]]


@pytest.mark.parametrize(
    "instance_type", ["ml.g4dn.xlarge", "ml.g5.2xlarge", "ml.p3.2xlarge", "ml.inf2.xlarge", "ml.trn1.2xlarge"]
)
def test_deploy_mme_refuses_gpu_instance_types(ahi_spleen, client, uploaded, instance_type: str) -> None:
    with pytest.raises(GpuMultiModelError, match=rf"{instance_type}.*Triton.*deploy-realtime.*deploy-async"):
        _deploy(ahi_spleen, "deploy-mme", "--instance-type", instance_type)
    sm = client("sagemaker")
    assert sm.list_models()["Models"] == []
    assert sm.list_endpoints()["Endpoints"] == []


def test_gpu_refusal_exits_nonzero_with_the_message(aws_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            "deploy-mme",
            "--name",
            NAME,
            "--bucket",
            BUCKET,
            "--instance-type",
            "ml.g4dn.xlarge",
            "--endpoint-url",
            aws_env,
            "--region",
            "us-east-1",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "ml.g4dn.xlarge is a GPU/accelerator type" in err
    assert "ahi-spleen deploy-realtime --instance-type ml.g4dn.xlarge" in err


def test_deploy_without_uploaded_model_says_to_upload(ahi_spleen) -> None:
    ahi_spleen("pipeline", "--name", NAME, "--bucket", BUCKET, "--create-roles")
    with pytest.raises(AwsCliError, match=r"no model archive at s3://.*/dep/models/.*upload-model"):
        _deploy(ahi_spleen, "deploy-mme")


def test_deploy_realtime_single_model_on_gpu(ahi_spleen, client, uploaded) -> None:
    out = _deploy(ahi_spleen, "deploy-realtime", "--instance-type", "ml.g4dn.xlarge", "--image", "my/image:1")
    sm = client("sagemaker")
    container = sm.describe_model(ModelName=out["result"]["model_name"])["PrimaryContainer"]
    assert container["Mode"] == "SingleModel"
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/{NAME}/models/model.tar.gz"
    assert container["Image"] == "my/image:1"
    config = sm.describe_endpoint_config(EndpointConfigName=out["result"]["config_name"])
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.xlarge"
    assert sm.describe_endpoint(EndpointName=f"{NAME}-rt")["EndpointStatus"] == "InService"
    assert (
        _deploy(ahi_spleen, "deploy-realtime", "--instance-type", "ml.g4dn.xlarge", "--image", "my/image:1")[
            "changes"
        ]
        == []
    )


def test_changed_settings_get_a_new_model_and_config(ahi_spleen, uploaded) -> None:
    first = _deploy(ahi_spleen, "deploy-realtime", "--no-wait")
    # models and configs are immutable: a different image is a new model + config, and the endpoint moves to
    # it with UpdateEndpoint (moto does not implement UpdateEndpoint, so the dry run shows the plan)
    out = ahi_spleen("deploy-realtime", "--name", NAME, "--bucket", BUCKET, "--image", "other:2", "--dry-run")
    calls = [c.split("(")[0] for c in out["would_call"]]
    assert calls == [
        "sagemaker.create_model",
        "sagemaker.create_endpoint_config",
        "sagemaker.update_endpoint",
    ]
    assert f"ModelName='{first['result']['model_name']}'" not in out["would_call"][0]
    assert "'Image': 'other:2'" in out["would_call"][0]


def test_deploy_async_config_topics_and_scale_to_zero(ahi_spleen, client, uploaded) -> None:
    out = _deploy(ahi_spleen, "deploy-async", "--sns", "--max-capacity", "3", "--backlog-target", "4")
    result = out["result"]
    endpoint_name = f"{NAME}-async"
    sm = client("sagemaker")
    config = sm.describe_endpoint_config(EndpointConfigName=result["endpoint"]["config_name"])
    async_config = config["AsyncInferenceConfig"]
    output = async_config["OutputConfig"]
    assert output["S3OutputPath"] == f"s3://{BUCKET}/{NAME}/async-output/"
    assert output["S3FailurePath"] == f"s3://{BUCKET}/{NAME}/async-failure/"
    assert output["NotificationConfig"]["SuccessTopic"].endswith(f":{NAME}-async-success")
    assert output["NotificationConfig"]["ErrorTopic"].endswith(f":{NAME}-async-error")
    assert async_config["ClientConfig"]["MaxConcurrentInvocationsPerInstance"] == 1

    sns = client("sns")
    topic_arns = sorted(t["TopicArn"] for t in sns.list_topics()["Topics"])
    assert topic_arns == sorted([result["success_topic"], result["error_topic"]])
    for arn in topic_arns:
        assert tags_of(sns.list_tags_for_resource(ResourceArn=arn)["Tags"])["ahi-spleen-project"] == NAME

    aas = client("application-autoscaling")
    rid = f"endpoint/{endpoint_name}/variant/AllTraffic"
    (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid])[
        "ScalableTargets"
    ]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 3)
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    policies = {
        p["PolicyName"]: p
        for p in aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid)[
            "ScalingPolicies"
        ]
    }
    tracking = policies[f"{NAME}-async-backlog-tracking"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 4.0
    assert tracking["CustomizedMetricSpecification"]["MetricName"] == "ApproximateBacklogSizePerInstance"
    assert tracking["CustomizedMetricSpecification"]["Dimensions"] == [
        {"Name": "EndpointName", "Value": endpoint_name}
    ]
    step = policies[f"{NAME}-async-scale-from-zero"]
    assert step["PolicyType"] == "StepScaling"
    assert step["StepScalingPolicyConfiguration"]["StepAdjustments"][0]["ScalingAdjustment"] == 1

    (alarm,) = client("cloudwatch").describe_alarms(
        AlarmNames=[f"{NAME}-async-has-backlog-without-capacity"]
    )["MetricAlarms"]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["Namespace"] == "AWS/SageMaker"
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": endpoint_name}]
    assert alarm["AlarmActions"] == [step["PolicyARN"]]

    again = _deploy(ahi_spleen, "deploy-async", "--sns", "--max-capacity", "3", "--backlog-target", "4")
    assert again["changes"] == []
    assert again["result"]["scaling"] == result["scaling"]


def test_deploy_async_refuses_min_above_max(ahi_spleen, uploaded) -> None:
    with pytest.raises(ValueError, match=r"0 <= min <= max"):
        _deploy(ahi_spleen, "deploy-async", "--min-capacity", "3", "--max-capacity", "2")


def test_dry_run_prints_calls_and_creates_nothing(aws_env: str, client, small_archive: Path) -> None:
    """Through the real entry point (`python -m scripts.aws`), as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    argv = [
        sys.executable,
        "-m",
        "scripts.aws",
        "deploy-mme",
        "--name",
        NAME,
        "--bucket",
        BUCKET,
        "--image",
        IMAGE,
        "--create-roles",
        "--dry-run",
        "--endpoint-url",
        aws_env,
        "--region",
        "us-east-1",
        "--no-progress",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["dry_run"] is True
    calls = [c.split("(")[0] for c in out["would_call"]]
    assert calls == [
        "iam.create_role",
        "iam.put_role_policy",
        "sagemaker.create_model",
        "sagemaker.create_endpoint_config",
        "sagemaker.create_endpoint",
        "cloudwatch.put_dashboard",
        *["cloudwatch.put_metric_alarm"] * 4,
    ]
    assert "'Mode': 'MultiModel'" in out["would_call"][2]
    assert client("sagemaker").list_models()["Models"] == []
    assert client("cloudwatch").list_dashboards()["DashboardEntries"] == []
    assert client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    assert client("iam").list_roles()["Roles"] == []


def test_existing_endpoint_without_our_tag_is_left_alone(ahi_spleen, client, uploaded) -> None:
    sm = client("sagemaker")
    role = client("iam").get_role(RoleName=f"{NAME}-codebuild")["Role"]["Arn"]
    sm.create_model(ModelName="theirs", ExecutionRoleArn=role, PrimaryContainer={"Image": "x"})
    sm.create_endpoint_config(
        EndpointConfigName="theirs",
        ProductionVariants=[
            {
                "VariantName": "v",
                "ModelName": "theirs",
                "InstanceType": "ml.m5.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName=f"{NAME}-mme", EndpointConfigName="theirs")
    with pytest.raises(AwsCliError, match=rf"endpoint {NAME}-mme exists but was not created by ahi-spleen"):
        _deploy(ahi_spleen, "deploy-mme")
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [
        "theirs"
    ]  # nothing created before refusing


def _sagemaker_policy(client) -> dict:
    role = f"{NAME}-sagemaker"
    return client("iam").get_role_policy(RoleName=role, PolicyName=f"{role}-policy")["PolicyDocument"]


def _allowed(policy: dict) -> set[str]:
    actions: set[str] = set()
    for statement in policy["Statement"]:
        listed = statement["Action"]
        actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def test_allow_write_back_grants_store_and_import_to_the_deployments_own_role(
    ahi_spleen, client, uploaded
) -> None:
    """The role a plain deploy creates reads AHI only; a deploy with --allow-write-back puts the policy again
    with StoreDICOM, the import-job route and PassRole on <name>-ahi-import only (passed to HealthImaging)."""
    _deploy(ahi_spleen, "deploy-mme", "--image", IMAGE)
    read_only = _allowed(_sagemaker_policy(client))
    assert "medical-imaging:GetImageFrame" in read_only
    assert not any(a.startswith("medical-imaging:Store") or a == "iam:PassRole" for a in read_only)

    _deploy(ahi_spleen, "deploy-mme", "--image", IMAGE, "--allow-write-back")
    policy = _sagemaker_policy(client)
    allowed = _allowed(policy)
    for action in ("StoreDICOM", "StoreDICOMStudy", "StartDICOMImportJob", "GetDICOMImportJob"):
        assert f"medical-imaging:{action}" in allowed
    (pass_role,) = [s for s in policy["Statement"] if s["Action"] == "iam:PassRole"]
    assert pass_role["Resource"] == f"arn:aws:iam::*:role/{NAME}-ahi-import"
    assert pass_role["Condition"] == {
        "StringEquals": {"iam:PassedToService": "medical-imaging.amazonaws.com"}
    }


def test_allow_write_back_never_changes_a_role_passed_in(ahi_spleen, client, uploaded) -> None:
    role = client("iam").get_role(RoleName=f"{NAME}-codebuild")["Role"]
    client("iam").update_assume_role_policy(
        RoleName=role["RoleName"],
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": ["codebuild.amazonaws.com", "sagemaker.amazonaws.com"]},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    before = client("iam").list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
    policies = {n: client("iam").get_role_policy(RoleName=role["RoleName"], PolicyName=n) for n in before}
    _deploy(ahi_spleen, "deploy-mme", "--image", IMAGE, "--role", role["Arn"], "--allow-write-back")
    after = {n: client("iam").get_role_policy(RoleName=role["RoleName"], PolicyName=n) for n in before}
    assert [p["PolicyDocument"] for p in after.values()] == [p["PolicyDocument"] for p in policies.values()]


def test_allow_write_back_leaves_a_same_named_role_without_our_tags_alone(
    ahi_spleen, client, uploaded
) -> None:
    """A `<name>-sagemaker` role someone made by hand is used as it is, never rewritten."""
    iam = client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sagemaker.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.create_role(RoleName=f"{NAME}-sagemaker", AssumeRolePolicyDocument=json.dumps(trust))
    theirs = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}],
    }
    iam.put_role_policy(RoleName=f"{NAME}-sagemaker", PolicyName="theirs", PolicyDocument=json.dumps(theirs))
    _deploy(ahi_spleen, "deploy-mme", "--image", IMAGE, "--allow-write-back")
    assert iam.list_role_policies(RoleName=f"{NAME}-sagemaker")["PolicyNames"] == ["theirs"]

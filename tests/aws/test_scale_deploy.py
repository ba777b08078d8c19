"""GPU hosts SageMaker offers today (InferenceAmiVersion, TransformAmiVersion) and ``deploy-components``
(inference components: moto does not model them, so the dry run's calls are checked, and that nothing was
created)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scripts.aws import batch, deploy
from scripts.aws.session import AwsCliError
from tests.aws.conftest import BUCKET
from trigger import selection

NAME = "gpu"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/gpu:latest"
COMMON = ("--name", NAME, "--bucket", BUCKET)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def archives(ahi_spleen, small_archive: Path) -> None:
    ahi_spleen("upload-model", *COMMON, "--archive", str(small_archive))
    ahi_spleen("upload-model", *COMMON, "--archive", str(small_archive), "--target-model", "spleen-v2.tar.gz")


def _variant(client, out: dict) -> dict:
    config = (
        out["result"]["config_name"]
        if "config_name" in out["result"]
        else out["result"]["endpoint"]["config_name"]
    )
    return client("sagemaker").describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]


def test_gpu_variants_select_the_cuda13_inference_ami_and_cpu_variants_none(
    ahi_spleen, client, archives
) -> None:
    assert deploy.GPU_INFERENCE_AMI in deploy.inference_ami_versions()  # the value exists in botocore's model
    gpu = ahi_spleen(
        "deploy-realtime", *COMMON, "--create-roles", "--image", IMAGE, "--instance-type", "ml.g4dn.xlarge"
    )
    assert _variant(client, gpu)["InferenceAmiVersion"] == "al2023-ami-sagemaker-inference-gpu-4-1"
    assert (
        ahi_spleen("deploy-realtime", *COMMON, "--image", IMAGE, "--instance-type", "ml.g4dn.xlarge")[
            "changes"
        ]
        == []
    )

    # the forward-compatibility path: same model, a config without the AMI, the endpoint moved to it (moto
    # has no
    # UpdateEndpoint, so the dry run shows the plan)
    fallback = ahi_spleen(
        "deploy-realtime", *COMMON, "--image", IMAGE, "--instance-type", "ml.g4dn.xlarge",
        "--inference-ami-version", "none", "--dry-run",
    )  # fmt: skip
    ops = [c.split("(")[0] for c in fallback["would_call"]]
    assert ops == ["sagemaker.create_endpoint_config", "sagemaker.update_endpoint"]
    assert "InferenceAmiVersion" not in fallback["would_call"][0]

    cpu = ahi_spleen("deploy-async", *COMMON, "--image", IMAGE, "--instance-type", "ml.m5.xlarge")
    assert "InferenceAmiVersion" not in _variant(client, cpu)

    with pytest.raises(
        AwsCliError, match=r"'al2-gpu-9' is not one of \[.*al2023-ami-sagemaker-inference-gpu-4-1"
    ):
        ahi_spleen("deploy-realtime", *COMMON, "--image", IMAGE, "--inference-ami-version", "al2-gpu-9")


def test_transform_jobs_on_gpu_get_the_batch_ami() -> None:
    gpu = batch.TransformSettings(
        IMAGE, "arn:aws:iam::123456789012:role/r", "s3://b/m.tar.gz", "ml.g4dn.xlarge", 2, 3
    )
    params = batch.transform_job_params("job", "model", "s3://b/in.jsonl", "s3://b/out/", gpu)
    assert params["TransformResources"] == {
        "InstanceType": "ml.g4dn.xlarge",
        "InstanceCount": 2,
        "TransformAmiVersion": batch.TRANSFORM_GPU_AMI,
    }
    assert params["MaxConcurrentTransforms"] == 6
    assert params["TransformInput"]["SplitType"] == "Line" and params["BatchStrategy"] == "SingleRecord"
    assert params["ModelClientConfig"]["InvocationsMaxRetries"] == 0  # a retry would be a second inference
    cpu = batch.TransformSettings(
        IMAGE, "arn:aws:iam::123456789012:role/r", "s3://b/m.tar.gz", "ml.m5.xlarge"
    )
    assert "TransformAmiVersion" not in cpu.resources()


def test_deploy_components_dry_run_plans_one_component_per_archive(ahi_spleen, client, archives) -> None:
    out = ahi_spleen(
        "deploy-components", *COMMON, "--create-roles", "--image", IMAGE,
        "--archive", "model.tar.gz", "--archive", "spleen-v2.tar.gz", "--copies", "1", "--max-copies", "3",
        "--dry-run",
    )  # fmt: skip
    calls = out["would_call"]
    ops = [c.split("(")[0] for c in calls]
    assert ops.count("sagemaker.create_inference_component") == 2
    assert ops.count("sagemaker.create_model") == 2
    assert ops.count("application-autoscaling.register_scalable_target") == 2
    config = next(c for c in calls if c.startswith("sagemaker.create_endpoint_config("))
    assert "ManagedInstanceScaling" in config and "ExecutionRoleArn" in config and "ModelName" not in config
    assert "InferenceAmiVersion': 'al2023-ami-sagemaker-inference-gpu-4-1'" in config
    components = [c for c in calls if c.startswith("sagemaker.create_inference_component(")]
    assert f"InferenceComponentName='{NAME}-ic-model'" in components[0]
    assert f"InferenceComponentName='{NAME}-ic-spleen-v2'" in components[1]
    assert "'NumberOfAcceleratorDevicesRequired': 1.0" in components[0] and "CopyCount': 1" in components[0]
    scaling = [c for c in calls if c.startswith("application-autoscaling.register_scalable_target(")]
    assert f"ResourceId='inference-component/{NAME}-ic-model'" in scaling[0] and "MaxCapacity=3" in scaling[0]
    assert client("sagemaker").list_endpoints()["Endpoints"] == []
    assert client("sagemaker").list_models()["Models"] == []


def test_deploy_components_refuses_bad_settings_before_any_call(ahi_spleen, archives) -> None:
    with pytest.raises(AwsCliError, match=r"--accelerators 1 on ml.m5.xlarge, which has no NVIDIA GPU"):
        ahi_spleen(
            "deploy-components", *COMMON, "--image", IMAGE, "--instance-type", "ml.m5.xlarge", "--dry-run"
        )
    with pytest.raises(AwsCliError, match=r"no model archive|not found|does not exist"):
        ahi_spleen("deploy-components", *COMMON, "--image", IMAGE, "--archive", "missing.tar.gz", "--dry-run")


def test_the_trigger_pre_filter_uses_the_applications_minimum() -> None:
    tree = ast.parse((ROOT / "app" / "selection.py").read_text())
    values = [
        node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "MIN_SLICES" for t in node.targets)
        and isinstance(node.value, ast.Constant)
    ]
    assert values == [selection.MIN_SLICES]

"""``deploy-components``: the GPU multi-model route — one endpoint, one SageMaker inference component per
archive.

SageMaker multi-model endpoints take GPUs only with Triton containers; inference components do not care: the
endpoint ``<name>-ic`` holds instances (managed instance scaling between ``instance_count`` and
``max_instance_count``), and each model archive becomes a component ``<name>-ic-<archive>`` with its own model
(SingleModel, the same image), its compute reservation per copy (GPUs, memory, cores), its copy count and its
own autoscaling (target tracking on ``InvocationsPerCopy`` of ``inference-component/<component>``). Invoke one
with ``invoke_endpoint(EndpointName=<name>-ic, InferenceComponentName=<component>)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from scripts.aws import deploy
from scripts.aws.names import Names
from scripts.aws.session import Aws, AwsCliError, error_code, subset_equal, tag_list, wait_for

logger = logging.getLogger(__name__)

KIND = "ic"
NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:inference-component:DesiredCopyCount"


@dataclass(frozen=True)
class ComponentsSpec:
    image: str
    role_arn: str
    bucket: str
    archives: tuple[str, ...]
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = 1
    max_instance_count: int = 2
    copies: int = 1
    max_copies: int = 2
    accelerators: int = 1
    memory_mb: int = 8192
    cpus: float = 2.0
    invocations_per_copy: float = 2.0
    inference_ami_version: str | None = "auto"

    def __post_init__(self) -> None:
        if not self.archives or len(set(self.archives)) != len(self.archives):
            raise AwsCliError(f"--archive values must be given once each, got {list(self.archives)}")
        if not 1 <= self.instance_count <= self.max_instance_count:
            raise AwsCliError(
                f"need 1 <= --instance-count ({self.instance_count}) <= --max-instance-count "
                f"({self.max_instance_count})"
            )
        if not 1 <= self.copies <= self.max_copies:
            raise AwsCliError(f"need 1 <= --copies ({self.copies}) <= --max-copies ({self.max_copies})")
        if self.accelerators and not deploy.NVIDIA_RE.match(self.instance_type):
            raise AwsCliError(
                f"--accelerators {self.accelerators} on {self.instance_type}, which has no NVIDIA GPU; pass "
                "--accelerators 0 for a CPU instance type"
            )
        deploy.inference_ami_for(self.instance_type, self.inference_ami_version)

    def config_params(self) -> dict[str, Any]:
        variant: dict[str, Any] = {
            "VariantName": deploy.VARIANT,
            "InstanceType": self.instance_type,
            "InitialInstanceCount": self.instance_count,
            "ManagedInstanceScaling": {
                "Status": "ENABLED",
                "MinInstanceCount": self.instance_count,
                "MaxInstanceCount": self.max_instance_count,
            },
            "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
        }
        ami = deploy.inference_ami_for(self.instance_type, self.inference_ami_version)
        if ami:
            variant["InferenceAmiVersion"] = ami
        return {"ExecutionRoleArn": self.role_arn, "ProductionVariants": [variant]}

    def model_spec(self, archive: str, names: Names) -> deploy.EndpointSpec:
        return deploy.EndpointSpec(
            "rt",
            self.image,
            self.role_arn,
            f"s3://{self.bucket}/{names.model_key(archive)}",
            self.instance_type,
            inference_ami_version=self.inference_ami_version,
        )

    def component_spec(self, model_name: str) -> dict[str, Any]:
        requirements: dict[str, Any] = {
            "MinMemoryRequiredInMb": self.memory_mb,
            "NumberOfCpuCoresRequired": self.cpus,
        }
        if self.accelerators:
            requirements["NumberOfAcceleratorDevicesRequired"] = float(self.accelerators)
        return {
            "ModelName": model_name,
            "ComputeResourceRequirements": requirements,
            "StartupParameters": {
                "ModelDataDownloadTimeoutInSeconds": 1200,
                "ContainerStartupHealthCheckTimeoutInSeconds": 1200,
            },
        }


@dataclass(frozen=True)
class ComponentResult:
    name: str
    archive: str
    model_name: str
    copies: int
    status: str


@dataclass(frozen=True)
class ComponentsResult:
    endpoint_name: str
    config_name: str
    endpoint_status: str
    components: list[ComponentResult]


def _describe_component(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        return dict(aws.client("sagemaker").describe_inference_component(InferenceComponentName=name))
    except Exception as exc:
        if error_code(exc) == "ValidationException" and "could not find" in str(exc).lower():
            return None
        raise


def _wait_component(aws: Aws, name: str, timeout_s: float) -> str:
    last: dict[str, Any] = {}

    def status() -> str:
        last.update(aws.client("sagemaker").describe_inference_component(InferenceComponentName=name))
        return str(last["InferenceComponentStatus"])

    return wait_for(
        status,
        what=f"inference component {name}",
        done={"InService"},
        failed={"Failed"},
        timeout_s=timeout_s,
        interval_s=30.0,
        progress=aws.settings.progress_mode,
        failure_detail=lambda: str(last.get("FailureReason", "no reason given")),
    )


def scaling_policy(spec: ComponentsSpec) -> dict[str, Any]:
    return {
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": spec.invocations_per_copy,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"
            },
            "ScaleInCooldown": 300,
            "ScaleOutCooldown": 120,
        },
    }


def ensure_component_scaling(aws: Aws, component: str, spec: ComponentsSpec, readable: bool) -> None:
    """Copies between ``copies`` and ``max_copies``, tracking InvocationsPerCopy (``readable``: the component
    exists, so its scaling can be read; false only for a dry run of a new component)."""
    aas = aws.client("application-autoscaling")
    rid = f"inference-component/{component}"
    scope = {"ServiceNamespace": NAMESPACE, "ResourceId": rid, "ScalableDimension": DIMENSION}
    target = {"MinCapacity": spec.copies, "MaxCapacity": spec.max_copies}
    found = []
    if readable:
        found = aas.describe_scalable_targets(
            ServiceNamespace=NAMESPACE, ResourceIds=[rid], ScalableDimension=DIMENSION
        )["ScalableTargets"]
    if not (found and subset_equal(target, found[0])):
        aws.call("application-autoscaling", "register_scalable_target", **scope, **target)
    policy, name = scaling_policy(spec), f"{component}-invocations-per-copy"
    policies = aas.describe_scaling_policies(**scope)["ScalingPolicies"] if found else []
    if any(p["PolicyName"] == name and subset_equal(policy, p) for p in policies):
        return
    aws.call("application-autoscaling", "put_scaling_policy", PolicyName=name, **scope, **policy)


def ensure_components(
    aws: Aws,
    names: Names,
    spec: ComponentsSpec,
    wait: bool = True,
    force: bool = False,
    timeout_s: float = 3600.0,
) -> ComponentsResult:
    """Endpoint config (no model) → endpoint → per archive: model, component (copies), scaling."""
    endpoint_name = names.endpoint(KIND)
    current = deploy.describe_endpoint(aws, endpoint_name)
    if current is not None:
        deploy._check_ownership(aws, names, current, force)
    config_name = deploy.ensure_config(aws, names, KIND, spec.config_params())
    deploy.put_endpoint(aws, names, endpoint_name, current, config_name)
    status = "dry run" if aws.dry_run else deploy.wait_in_service(aws, endpoint_name, timeout_s)
    results = []
    for archive in spec.archives:
        component = names.inference_component(archive)
        model_name = deploy.ensure_model(aws, names, spec.model_spec(archive, names), kind=KIND)
        wanted = spec.component_spec(model_name)
        found = None if current is None else _describe_component(aws, component)
        if found is None:
            aws.call(
                "sagemaker",
                "create_inference_component",
                InferenceComponentName=component,
                EndpointName=endpoint_name,
                VariantName=deploy.VARIANT,
                Specification=wanted,
                RuntimeConfig={"CopyCount": spec.copies},
                Tags=tag_list(names.name),
            )
        elif not subset_equal(wanted, found.get("Specification", {})):
            aws.call(
                "sagemaker",
                "update_inference_component",
                InferenceComponentName=component,
                Specification=wanted,
                RuntimeConfig={"CopyCount": spec.copies},
            )
        state = "dry run"
        if not aws.dry_run:
            state = _wait_component(aws, component, timeout_s) if wait else "Creating"
        ensure_component_scaling(aws, component, spec, readable=not aws.dry_run or found is not None)
        results.append(ComponentResult(component, archive, model_name, spec.copies, state))
    return ComponentsResult(endpoint_name, config_name, status, results)

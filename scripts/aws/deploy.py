"""SageMaker endpoints: multi-model (CPU), single-model real-time (GPU allowed) and async, all from one image.

Models and endpoint configs are immutable in SageMaker, so their names carry a hash of their settings (see
:mod:`scripts.aws.names`): re-running with the same settings finds everything and changes nothing; changed
settings create a new model/config and move the endpoint to it with UpdateEndpoint.

GPU + multi-model: SageMaker supports GPU multi-model endpoints only with Triton-based containers; custom
containers get "MultiModel mode is not supported for instance type ml.g4dn.xlarge". ``deploy-mme`` therefore
refuses GPU instance types and points to ``deploy-realtime`` / ``deploy-async``, which run the same image and
archive on a GPU.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scripts.aws.names import Names
from scripts.aws.session import Aws, AwsCliError, error_code, is_ours, tag_list, wait_for

logger = logging.getLogger(__name__)

DEFAULT_MME_INSTANCE = "ml.m5.2xlarge"
DEFAULT_GPU_INSTANCE = "ml.g4dn.xlarge"
VARIANT = "AllTraffic"
#: Container environment set on every model; ``--env KEY=VALUE`` adds to or overrides it.
DEFAULT_ENV = {
    "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
    "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "600",
}
ACCELERATED_RE = re.compile(r"^ml\.(g\d|p\d|inf\d|trn\d|dl\d)", re.IGNORECASE)
NVIDIA_RE = re.compile(r"^ml\.(g\d|p\d)", re.IGNORECASE)
#: Inference AMI for NVIDIA instance types: driver 580 / CUDA 13.0, matching the image (holoscan-cu13, torch
#: cu130). SageMaker's default GPU hosts ship driver 535/550, where the image falls back to its CUDA
#: forward-compatibility libraries (container/cuda_compat.py); ``--inference-ami-version none`` keeps
#: that path.
GPU_INFERENCE_AMI = "al2023-ami-sagemaker-inference-gpu-4-1"


class GpuMultiModelError(AwsCliError):
    """A GPU (or other accelerator) instance type was asked for the multi-model endpoint."""


def is_accelerated(instance_type: str) -> bool:
    """True for GPU/accelerator instance families (ml.g*, ml.p*, ml.inf*, ml.trn*, ml.dl*)."""
    return bool(ACCELERATED_RE.match(instance_type))


def inference_ami_versions() -> list[str]:
    """The ``InferenceAmiVersion`` values this botocore's SageMaker model accepts."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("ProductionVariantInferenceAmiVersion").enum)


def inference_ami_for(instance_type: str, requested: str | None = "auto") -> str | None:
    """The AMI version a production variant on ``instance_type`` gets: ``auto`` picks
    :data:`GPU_INFERENCE_AMI` for NVIDIA types (none for CPU), ``none`` leaves SageMaker's default host (the
    forward-compatibility path)."""
    if requested in (None, "auto"):
        return GPU_INFERENCE_AMI if NVIDIA_RE.match(instance_type) else None
    if requested == "none":
        return None
    known = inference_ami_versions()
    if requested not in known:
        raise AwsCliError(f"--inference-ami-version {requested!r} is not one of {known} (or auto / none)")
    return requested


def refuse_gpu_for_mme(instance_type: str) -> None:
    if is_accelerated(instance_type):
        raise GpuMultiModelError(
            f"instance type {instance_type} is a GPU/accelerator type, and SageMaker multi-model "
            "endpoints support GPUs only with Triton-based containers (custom containers fail with "
            f"'MultiModel mode is not supported for instance type {instance_type}'). Use a CPU type for "
            f"deploy-mme (default {DEFAULT_MME_INSTANCE}), or run the same image on a GPU with "
            f"`ahi-spleen deploy-realtime --instance-type {instance_type}` (single-model real-time) or "
            f"`ahi-spleen deploy-async --instance-type {instance_type}` (async, scales to zero)"
        )


@dataclass(frozen=True)
class EndpointSpec:
    """Everything that defines one endpoint; ``kind`` is ``mme``, ``rt`` or ``async``."""

    kind: str
    image: str
    role_arn: str
    model_data_url: str
    instance_type: str
    instance_count: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    async_config: Mapping[str, Any] | None = None
    inference_ami_version: str | None = "auto"

    def __post_init__(self) -> None:
        inference_ami_for(self.instance_type, self.inference_ami_version)  # validated before any AWS call
        if self.kind not in ("mme", "rt", "async"):
            raise ValueError(f"endpoint kind must be mme, rt or async, got {self.kind!r}")
        if self.kind == "mme":
            refuse_gpu_for_mme(self.instance_type)
            if not self.model_data_url.endswith("/"):
                raise ValueError(
                    f"a multi-model ModelDataUrl must be an S3 prefix ending in '/': {self.model_data_url!r}"
                )
        elif not self.model_data_url.endswith(".tar.gz"):
            raise ValueError(f"a single-model ModelDataUrl must be a .tar.gz object: {self.model_data_url!r}")
        if self.instance_count < 1:
            raise ValueError(f"instance count must be >= 1, got {self.instance_count}")

    @property
    def mode(self) -> str:
        return "MultiModel" if self.kind == "mme" else "SingleModel"

    def model_params(self) -> dict[str, Any]:
        env = {**DEFAULT_ENV, "SAGEMAKER_MULTI_MODEL": str(self.kind == "mme").lower(), **self.env}
        return {
            "PrimaryContainer": {
                "Image": self.image,
                "Mode": self.mode,
                "ModelDataUrl": self.model_data_url,
                "Environment": dict(sorted(env.items())),
            },
            "ExecutionRoleArn": self.role_arn,
        }

    def config_params(self, model_name: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "ProductionVariants": [
                {
                    "VariantName": VARIANT,
                    "ModelName": model_name,
                    "InstanceType": self.instance_type,
                    "InitialInstanceCount": self.instance_count,
                }
            ]
        }
        ami = inference_ami_for(self.instance_type, self.inference_ami_version)
        if ami:
            params["ProductionVariants"][0]["InferenceAmiVersion"] = ami
        if self.async_config is not None:
            params["AsyncInferenceConfig"] = dict(self.async_config)
        return params


@dataclass(frozen=True)
class EndpointResult:
    endpoint_name: str
    endpoint_arn: str
    model_name: str
    config_name: str
    status: str
    monitoring: dict[str, Any] | None = None  # dashboard and alarm names (scripts.aws.monitoring)


def _not_found(exc: BaseException) -> bool:
    return error_code(exc) == "ValidationException" and "Could not find" in str(exc)


def ensure_model(aws: Aws, names: Names, spec: EndpointSpec, kind: str | None = None) -> str:
    """The model of ``spec`` under ``<name>-<kind>-<settings hash>`` (``kind`` defaults to the spec's),
    created when missing; an existing one is never changed (new settings give a new name)."""
    params = spec.model_params()
    model_name = names.model(kind or spec.kind, params)
    try:
        aws.client("sagemaker").describe_model(ModelName=model_name)
    except Exception as exc:
        if not _not_found(exc):
            raise
        aws.call("sagemaker", "create_model", ModelName=model_name, **params, Tags=tag_list(names.name))
    return model_name


def ensure_config(aws: Aws, names: Names, kind: str, params: dict[str, Any]) -> str:
    """The endpoint config with ``params`` under ``<name>-<kind>-cfg-<settings hash>``, created when
    missing."""
    config_name = names.endpoint_config(kind, params)
    try:
        aws.client("sagemaker").describe_endpoint_config(EndpointConfigName=config_name)
    except Exception as exc:
        if not _not_found(exc):
            raise
        aws.call(
            "sagemaker",
            "create_endpoint_config",
            EndpointConfigName=config_name,
            **params,
            Tags=tag_list(names.name),
        )
    return config_name


def ensure_endpoint_config(aws: Aws, names: Names, spec: EndpointSpec, model_name: str) -> str:
    return ensure_config(aws, names, spec.kind, spec.config_params(model_name))


def put_endpoint(
    aws: Aws, names: Names, endpoint_name: str, current: dict[str, Any] | None, config_name: str
) -> str:
    """Create the endpoint, or point an existing one (``current``, its description) at ``config_name``;
    returns its ARN (a placeholder in a dry run of a new endpoint)."""
    if current is None:
        created = aws.call(
            "sagemaker",
            "create_endpoint",
            EndpointName=endpoint_name,
            EndpointConfigName=config_name,
            Tags=tag_list(names.name),
        )
        return str(created["EndpointArn"])
    if current.get("EndpointConfigName") != config_name:
        previous = current.get("EndpointConfigName")
        logger.info("endpoint %s uses %s; updating to %s", endpoint_name, previous, config_name)
        aws.call("sagemaker", "update_endpoint", EndpointName=endpoint_name, EndpointConfigName=config_name)
    return str(current["EndpointArn"])


def describe_endpoint(aws: Aws, endpoint_name: str) -> dict[str, Any] | None:
    try:
        return dict(aws.client("sagemaker").describe_endpoint(EndpointName=endpoint_name))
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def wait_in_service(aws: Aws, endpoint_name: str, timeout_s: float = 3600.0) -> str:
    sm = aws.client("sagemaker")
    last: dict[str, Any] = {}

    def status() -> str:
        last.update(sm.describe_endpoint(EndpointName=endpoint_name))
        return str(last["EndpointStatus"])

    return wait_for(
        status,
        what=f"endpoint {endpoint_name}",
        done={"InService"},
        failed={"Failed", "OutOfService"},
        timeout_s=timeout_s,
        interval_s=30.0,
        progress=aws.settings.progress_mode,
        failure_detail=lambda: (
            f"{last.get('FailureReason', 'no reason given')}; see CloudWatch logs "
            f"/aws/sagemaker/Endpoints/{endpoint_name}, fix, then `ahi-spleen cleanup` and retry"
        ),
    )


def _check_ownership(aws: Aws, names: Names, endpoint: dict[str, Any], force: bool) -> None:
    """Refuse an existing endpoint without our project tag (unless ``force``), before creating anything."""
    tags = list(aws.paginate("sagemaker", "list_tags", "Tags", ResourceArn=endpoint["EndpointArn"]))
    if not force and not is_ours(tags, names.name):
        raise AwsCliError(
            f"endpoint {endpoint['EndpointName']} exists but was not created by ahi-spleen --name "
            f"{names.name} (no project tag); choose another --name or pass --force to take it over"
        )


def ensure_endpoint(
    aws: Aws,
    names: Names,
    spec: EndpointSpec,
    wait: bool = True,
    force: bool = False,
    timeout_s: float = 3600.0,
) -> EndpointResult:
    """Create or update the ``spec.kind`` endpoint (model → endpoint config → endpoint), then wait for
    InService."""
    endpoint_name = names.endpoint(spec.kind)
    current = describe_endpoint(aws, endpoint_name)
    if current is not None:
        _check_ownership(aws, names, current, force)
        if current["EndpointStatus"] in ("Creating", "Updating", "SystemUpdating") and wait:
            wait_in_service(aws, endpoint_name, timeout_s)
    model_name = ensure_model(aws, names, spec)
    config_name = ensure_endpoint_config(aws, names, spec, model_name)
    arn = put_endpoint(aws, names, endpoint_name, current, config_name)
    if aws.dry_run:
        status = "dry run: not created" if current is None else f"dry run: {current['EndpointStatus']}"
    elif wait:
        status = wait_in_service(aws, endpoint_name, timeout_s)
    else:
        status = str((describe_endpoint(aws, endpoint_name) or {}).get("EndpointStatus", "unknown"))
    return EndpointResult(endpoint_name, arn, model_name, config_name, status)


def async_inference_config(
    names: Names, bucket: str, success_topic: str | None, error_topic: str | None, max_concurrent: int = 1
) -> dict[str, Any]:
    """AsyncInferenceConfig: results to ``<name>/async-output/``, failures to ``<name>/async-failure/``,
    SNS."""
    output: dict[str, Any] = {
        "S3OutputPath": f"s3://{bucket}/{names.async_output_prefix}",
        "S3FailurePath": f"s3://{bucket}/{names.async_failure_prefix}",
    }
    notification = {k: v for k, v in (("SuccessTopic", success_topic), ("ErrorTopic", error_topic)) if v}
    if notification:
        output["NotificationConfig"] = notification
    return {"OutputConfig": output, "ClientConfig": {"MaxConcurrentInvocationsPerInstance": max_concurrent}}

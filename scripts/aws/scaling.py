"""Async endpoint scaling (to and from zero) and its SNS topics.

- Application Auto Scaling target on ``endpoint/<ep>/variant/AllTraffic`` with MinCapacity 0.
- Target tracking on the custom metric ``ApproximateBacklogSizePerInstance`` (AWS/SageMaker, EndpointName):
keeps the
  queue per instance near the target and scales in to 0 when the queue is empty.
- Target tracking cannot scale out from 0 instances (the per-instance metric has no instances), so a
step-scaling
  policy adds one instance when the CloudWatch alarm on ``HasBacklogWithoutCapacity`` fires.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from scripts.aws.deploy import VARIANT
from scripts.aws.names import Names
from scripts.aws.session import Aws, subset_equal, tag_list, tag_map

logger = logging.getLogger(__name__)

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


@dataclass(frozen=True)
class ScalingSettings:
    min_capacity: int = 0
    max_capacity: int = 2
    backlog_target: float = 5.0
    scale_in_cooldown_s: int = 600
    scale_out_cooldown_s: int = 300

    def __post_init__(self) -> None:
        if self.min_capacity < 0 or self.max_capacity < max(1, self.min_capacity):
            raise ValueError(
                f"scaling capacities must satisfy 0 <= min <= max and max >= 1, got min {self.min_capacity}, "
                f"max {self.max_capacity}"
            )
        if self.backlog_target <= 0:
            raise ValueError(f"--backlog-target must be > 0, got {self.backlog_target}")


def resource_id(endpoint_name: str) -> str:
    return f"endpoint/{endpoint_name}/variant/{VARIANT}"


def ensure_topic(aws: Aws, names: Names, outcome: str) -> str:
    """SNS topic ``<name>-async-<outcome>`` (found by name; created with our tags when missing)."""
    topic_name = names.topic(outcome)
    for topic in aws.paginate("sns", "list_topics", "Topics"):
        if topic["TopicArn"].rsplit(":", 1)[-1] == topic_name:
            return str(topic["TopicArn"])
    created = aws.call("sns", "create_topic", Name=topic_name, Tags=tag_list(names.name))
    return str(created["TopicArn"])


def ensure_scalable_target(aws: Aws, names: Names, endpoint_name: str, settings: ScalingSettings) -> None:
    rid = resource_id(endpoint_name)
    found = aws.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=[rid], ScalableDimension=DIMENSION
    )["ScalableTargets"]
    wanted = {"MinCapacity": settings.min_capacity, "MaxCapacity": settings.max_capacity}
    if found and subset_equal(wanted, found[0]):
        return
    aws.call(
        "application-autoscaling",
        "register_scalable_target",
        ServiceNamespace=NAMESPACE,
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        **wanted,
        Tags=tag_map(names.name),
    )


def _ensure_policy(aws: Aws, endpoint_name: str, policy_name: str, policy: dict[str, Any]) -> str:
    rid = resource_id(endpoint_name)
    found = aws.client("application-autoscaling").describe_scaling_policies(
        ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION, PolicyNames=[policy_name]
    )["ScalingPolicies"]
    found = [p for p in found if p["PolicyName"] == policy_name]
    if found and subset_equal(policy, found[0]):
        return str(found[0]["PolicyARN"])
    put = aws.call(
        "application-autoscaling",
        "put_scaling_policy",
        PolicyName=policy_name,
        ServiceNamespace=NAMESPACE,
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        **policy,
    )
    return str(put["PolicyARN"])


def backlog_policy(endpoint_name: str, settings: ScalingSettings) -> dict[str, Any]:
    return {
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": settings.backlog_target,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}],
                "Statistic": "Average",
            },
            "ScaleInCooldown": settings.scale_in_cooldown_s,
            "ScaleOutCooldown": settings.scale_out_cooldown_s,
        },
    }


def scale_from_zero_policy(settings: ScalingSettings) -> dict[str, Any]:
    return {
        "PolicyType": "StepScaling",
        "StepScalingPolicyConfiguration": {
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": settings.scale_out_cooldown_s,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
        },
    }


def alarm_params(names: Names, endpoint_name: str, policy_arn: str) -> dict[str, Any]:
    return {
        "AlarmName": names.scale_from_zero_alarm,
        "AlarmDescription": f"scale {endpoint_name} out from zero instances when requests are queued",
        "Namespace": "AWS/SageMaker",
        "MetricName": "HasBacklogWithoutCapacity",
        "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}],
        "Statistic": "Average",
        "Period": 60,
        "EvaluationPeriods": 2,
        "DatapointsToAlarm": 2,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "missing",
        "AlarmActions": [policy_arn],
    }


def ensure_alarm(aws: Aws, names: Names, params: dict[str, Any]) -> None:
    found = aws.client("cloudwatch").describe_alarms(AlarmNames=[params["AlarmName"]])["MetricAlarms"]
    if found and subset_equal(params, found[0]):
        return
    aws.call("cloudwatch", "put_metric_alarm", **params, Tags=tag_list(names.name))


@dataclass(frozen=True)
class ScalingResult:
    resource_id: str
    backlog_policy_arn: str
    step_policy_arn: str
    alarm_name: str


def ensure_async_scaling(
    aws: Aws, names: Names, endpoint_name: str, settings: ScalingSettings
) -> ScalingResult:
    ensure_scalable_target(aws, names, endpoint_name, settings)
    tracking_arn = _ensure_policy(
        aws, endpoint_name, names.backlog_policy, backlog_policy(endpoint_name, settings)
    )
    step_arn = _ensure_policy(
        aws, endpoint_name, names.scale_from_zero_policy, scale_from_zero_policy(settings)
    )
    ensure_alarm(aws, names, alarm_params(names, endpoint_name, step_arn))
    return ScalingResult(resource_id(endpoint_name), tracking_arn, step_arn, names.scale_from_zero_alarm)

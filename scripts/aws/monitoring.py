"""CloudWatch dashboard and alarms of one endpoint, made by ``ahi-spleen deploy-*``, removed by ``cleanup``.

The container writes one Embedded Metric Format line per input (:mod:`container.metrics`), so its metrics
exist as soon as the endpoint serves: namespace :data:`container.metrics.NAMESPACE`, dimension ``Service`` =
the endpoint's name (``deploy-*`` sets ``SPLEEN_METRICS_SERVICE`` in the container environment), plus
``Outcome`` and ``VolumeBucket``. The dashboard ``<name>-<kind>`` shows them next to SageMaker's own endpoint
metrics (``AWS/SageMaker``: invocations, 4xx/5xx, model latency). Alarms (``<name>-<kind>-<what>``, tagged
with the project tag like everything the CLI makes, no actions: add an SNS topic to notify):

- ``server-errors``: an input failed with a 5xx outcome (sum >= 1 in 5 minutes);
- ``throttles``: more than :data:`THROTTLE_ALARM` throttled AHI responses in 5 minutes;
- ``slow-inference``: p90 of the inference stage above :data:`SLOW_INFERENCE_S` for 15 minutes;
- ``invocation-5xx``: SageMaker counted 5xx invocation errors (sum >= 1 in 5 minutes).

A dashboard cannot carry tags, so ownership is a marker in its text widget (:func:`is_our_dashboard`).
Everything is compared before it is written: a re-run with the same settings changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from container.metrics import NAMESPACE, stage_metric
from scripts.aws.names import Names
from scripts.aws.scaling import ensure_alarm
from scripts.aws.session import Aws, AwsCliError, error_code

#: Environment variable naming the metrics' ``Service`` dimension (read by container.metrics).
SERVICE_ENV = "SPLEEN_METRICS_SERVICE"
THROTTLE_ALARM = 100.0
SLOW_INFERENCE_S = 120.0
ALARM_KINDS = ("server-errors", "throttles", "slow-inference", "invocation-5xx")
VARIANT = "AllTraffic"
MARKER = "managed by ahi-spleen"


def dashboard_name(names: Names, kind: str) -> str:
    return names.endpoint(kind)


def alarm_name(names: Names, kind: str, what: str) -> str:
    return f"{names.endpoint(kind)}-{what}"


def _marker(names: Names) -> str:
    return f"{MARKER} (deployment {names.name}); removed by `ahi-spleen cleanup --name {names.name}`"


def is_our_dashboard(body: str, names: Names) -> bool:
    return _marker(names) in body


def _ours(endpoint_name: str, metric: str, *extra: str, stat: str = "Sum", label: str = "") -> list[Any]:
    opts: dict[str, Any] = {"stat": stat}
    if label:
        opts["label"] = label
    return [NAMESPACE, metric, "Service", endpoint_name, *extra, opts]


def _sagemaker(endpoint_name: str, metric: str, stat: str = "Sum", **opts: Any) -> list[Any]:
    return [
        "AWS/SageMaker",
        metric,
        "EndpointName",
        endpoint_name,
        "VariantName",
        VARIANT,
        {"stat": stat, **opts},
    ]


def _graph(title: str, metrics: list[list[Any]], region: str, x: int, y: int, **props: Any) -> dict[str, Any]:
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": 12,
        "height": 6,
        "properties": {
            "title": title,
            "region": region,
            "view": "timeSeries",
            "period": 300,
            "metrics": metrics,
            **props,
        },
    }


def dashboard_body(names: Names, kind: str, region: str) -> dict[str, Any]:
    """The dashboard (CloudWatch dashboard body structure: ``widgets`` of type ``text`` and ``metric``)."""
    ep = names.endpoint(kind)
    stages = ("fetch_decode", "volume", "inference", "seg_write", "preview")
    stage_metrics = [_ours(ep, stage_metric(s), stat="p50", label=s) for s in stages]
    widgets = [
        {
            "type": "text",
            "x": 0,
            "y": 0,
            "width": 24,
            "height": 2,
            "properties": {"markdown": f"## Spleen segmentation: endpoint `{ep}`\n{_marker(names)}"},
        },
        _graph(
            "Inputs by outcome",
            [
                _ours(ep, "Inputs", "Outcome", outcome, label=outcome)
                for outcome in ("succeeded", "client_error", "server_error")
            ],
            region,
            0,
            2,
            stacked=True,
        ),
        _graph("Stage seconds (p50)", stage_metrics, region, 12, 2),
        _graph(
            "AHI frames fetched, retried, throttled",
            [_ours(ep, m, label=m) for m in ("FramesFetched", "FrameRetries", "Throttles")],
            region,
            0,
            8,
        ),
        _graph(
            "Spleen volume bucket (inputs)",
            [
                _ours(ep, "Inputs", "VolumeBucket", bucket, label=bucket)
                for bucket in ("empty", "lt150mL", "150to300mL", "300to500mL", "ge500mL")
            ],
            region,
            12,
            8,
            stacked=True,
        ),
        _graph(
            "SageMaker invocations and errors",
            [_sagemaker(ep, m) for m in ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors")],
            region,
            0,
            14,
        ),
        _graph(
            "Input seconds (p50, p90) and SageMaker model latency (p90, microseconds, right axis)",
            [
                _ours(ep, "InputSeconds", stat="p50", label="input p50"),
                _ours(ep, "InputSeconds", stat="p90", label="input p90"),
                _sagemaker(ep, "ModelLatency", "p90", yAxis="right", label="model latency p90"),
            ],
            region,
            12,
            14,
        ),
    ]
    return {"widgets": widgets}


def alarm_params(names: Names, kind: str) -> list[dict[str, Any]]:
    ep = names.endpoint(kind)
    service = [{"Name": "Service", "Value": ep}]
    common = {"Period": 300, "TreatMissingData": "notBreaching", "ActionsEnabled": True}
    return [
        {
            "AlarmName": alarm_name(names, kind, "server-errors"),
            "AlarmDescription": f"{ep}: an input failed with a server error (5xx); see the endpoint's log",
            "Namespace": NAMESPACE,
            "MetricName": "InputsFailed",
            "Dimensions": [*service, {"Name": "Outcome", "Value": "server_error"}],
            "Statistic": "Sum",
            "EvaluationPeriods": 1,
            "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            **common,
        },
        {
            "AlarmName": alarm_name(names, kind, "throttles"),
            "AlarmDescription": f"{ep}: HealthImaging throttled over {THROTTLE_ALARM:g} calls in 5 minutes",
            "Namespace": NAMESPACE,
            "MetricName": "Throttles",
            "Dimensions": service,
            "Statistic": "Sum",
            "EvaluationPeriods": 1,
            "Threshold": THROTTLE_ALARM,
            "ComparisonOperator": "GreaterThanThreshold",
            **common,
        },
        {
            "AlarmName": alarm_name(names, kind, "slow-inference"),
            "AlarmDescription": f"{ep}: p90 inference stage above {SLOW_INFERENCE_S:g} s for 15 minutes",
            "Namespace": NAMESPACE,
            "MetricName": "StageInferenceSeconds",
            "Dimensions": service,
            "ExtendedStatistic": "p90",
            "EvaluationPeriods": 3,
            "Threshold": SLOW_INFERENCE_S,
            "ComparisonOperator": "GreaterThanThreshold",
            **common,
        },
        {
            "AlarmName": alarm_name(names, kind, "invocation-5xx"),
            "AlarmDescription": f"{ep}: SageMaker counted 5xx invocation errors",
            "Namespace": "AWS/SageMaker",
            "MetricName": "Invocation5XXErrors",
            "Dimensions": [{"Name": "EndpointName", "Value": ep}, {"Name": "VariantName", "Value": VARIANT}],
            "Statistic": "Sum",
            "EvaluationPeriods": 1,
            "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            **common,
        },
    ]


def _ensure_dashboard(aws: Aws, names: Names, kind: str) -> str:
    name = dashboard_name(names, kind)
    body = json.dumps(dashboard_body(names, kind, aws.region), sort_keys=True)
    try:
        current = aws.client("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"]
    except Exception as exc:
        if error_code(exc) not in ("ResourceNotFound", "ResourceNotFoundException"):
            raise
        current = None
    if current is not None and json.loads(current) == json.loads(body):
        return name
    if current is not None and not is_our_dashboard(current, names):
        raise AwsCliError(
            f"dashboard {name} exists and was not made by ahi-spleen for deployment {names.name}; "
            "choose another --name or delete that dashboard"
        )
    aws.call("cloudwatch", "put_dashboard", DashboardName=name, DashboardBody=body)
    return name


def ensure_monitoring(aws: Aws, names: Names, kind: str) -> dict[str, Any]:
    """Create or update the endpoint's dashboard and alarms; returns their names."""
    dashboard = _ensure_dashboard(aws, names, kind)
    alarms = alarm_params(names, kind)
    for params in alarms:
        ensure_alarm(aws, names, params)
    return {"dashboard": dashboard, "alarms": [a["AlarmName"] for a in alarms]}

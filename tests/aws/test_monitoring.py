"""Dashboard and alarms of ``deploy-*`` against the moto server, checked as CloudWatch would read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from container.metrics import NAMESPACE, input_metrics
from scripts.aws.session import AwsCliError
from tests.aws.conftest import BUCKET
from tests.aws.util import tags_of

NAME = "mon"
IMAGE = "111122223333.dkr.ecr.us-east-1.amazonaws.com/mon:latest"
STATS = {"SampleCount", "Average", "Sum", "Minimum", "Maximum"}


@pytest.fixture
def uploaded(ahi_spleen, small_archive: Path) -> None:
    ahi_spleen("upload-model", "--name", NAME, "--bucket", BUCKET, "--archive", str(small_archive))


def _deploy(ahi_spleen, command: str, *extra: str) -> dict:
    return ahi_spleen(command, "--name", NAME, "--bucket", BUCKET, "--image", IMAGE, "--create-roles", *extra)


def _metric_widget_problems(widget: dict) -> list[str]:
    """The dashboard body rules for a metric widget: metrics arrays are [namespace, name, (dim, value)*,
    {options}?] and every option is a known one."""
    problems = []
    props = widget["properties"]
    if not props.get("region"):
        problems.append(f"{props.get('title')}: no region")
    for metric in props["metrics"]:
        opts = metric[-1] if isinstance(metric[-1], dict) else {}
        names = metric[:-1] if opts else metric
        if len(names) < 2 or len(names) % 2 != 0 or not all(isinstance(v, str) for v in names):
            problems.append(f"{props.get('title')}: malformed metric array {metric}")
        stat = opts.get("stat", "Average")
        if stat not in STATS and not (stat.startswith("p") and stat[1:].replace(".", "").isdigit()):
            problems.append(f"{props.get('title')}: unknown stat {stat}")
        if set(opts) - {"stat", "label", "yAxis", "color", "period", "visible", "id"}:
            problems.append(f"{props.get('title')}: unknown options {sorted(opts)}")
    return problems


def test_deploy_creates_a_dashboard_and_alarms_on_the_metrics_the_container_emits(
    ahi_spleen, client, uploaded
) -> None:
    out = _deploy(ahi_spleen, "deploy-mme")
    monitoring = out["result"]["monitoring"]
    cw, sm = client("cloudwatch"), client("sagemaker")
    endpoint = f"{NAME}-mme"
    assert monitoring["dashboard"] == endpoint
    model = sm.describe_model(ModelName=out["result"]["model_name"])
    assert model["PrimaryContainer"]["Environment"]["SPLEEN_METRICS_SERVICE"] == endpoint

    body = json.loads(cw.get_dashboard(DashboardName=endpoint)["DashboardBody"])
    metric_widgets = [w for w in body["widgets"] if w["type"] == "metric"]
    assert metric_widgets and [p for w in metric_widgets for p in _metric_widget_problems(w)] == []

    # What the container would write for this endpoint: every metric the dashboard and the project's
    # alarms read from our namespace is a metric of such a line, with dimensions from its dimension sets.
    emitted = input_metrics(
        "r",
        {
            "index": 0,
            "status": "succeeded",
            "seconds": 1.0,
            "spleenVolumeMl": 200.0,
            "report": {
                "fetch": {"frames": 1, "frameRetries": 0, "throttles": 0},
                "timingsSeconds": {
                    s: 1.0 for s in ("fetch_decode", "volume", "inference", "seg_write", "preview")
                },
            },
        },
    )
    # (metric, sorted dimension names) pairs the line makes, per the EMF rules: each metric of a directive in
    # each of its dimension sets
    emitted_pairs = {
        (m["Name"], tuple(sorted(dims)))
        for directive in emitted["_aws"]["CloudWatchMetrics"]
        for m in directive["Metrics"]
        for dims in directive["Dimensions"]
    }
    ours = [m for w in metric_widgets for m in w["properties"]["metrics"] if m[0] == NAMESPACE]
    for metric in ours:
        dims = dict(zip(metric[2:-1:2], metric[3:-1:2], strict=True))
        assert (metric[1], tuple(sorted(dims))) in emitted_pairs, metric
        assert dims["Service"] == endpoint

    alarms = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix=f"{endpoint}-")["MetricAlarms"]}
    assert sorted(alarms) == sorted(monitoring["alarms"]) and len(alarms) == 4
    for alarm in alarms.values():
        assert (
            tags_of(cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"])["ahi-spleen-project"]
            == NAME
        )
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        if alarm["Namespace"] == NAMESPACE:
            assert (alarm["MetricName"], tuple(sorted(dims))) in emitted_pairs, alarm["AlarmName"]
            assert dims["Service"] == endpoint
        else:
            assert dims == {"EndpointName": endpoint, "VariantName": "AllTraffic"}

    # idempotent: the same deploy again changes nothing
    again = _deploy(ahi_spleen, "deploy-mme")
    assert again["changes"] == [] and again["result"] == out["result"]


def test_cleanup_removes_dashboard_and_alarms_but_not_a_dashboard_it_did_not_make(
    ahi_spleen, client, uploaded
) -> None:
    _deploy(ahi_spleen, "deploy-realtime")
    cw = client("cloudwatch")
    cw.put_dashboard(DashboardName=f"{NAME}-async", DashboardBody=json.dumps({"widgets": []}))  # not ours
    out = ahi_spleen("cleanup", "--name", NAME)
    deleted = out["result"]["deleted"]
    assert f"dashboard {NAME}-rt" in deleted and f"dashboard {NAME}-async" in out["result"]["kept"]
    assert [d["DashboardName"] for d in cw.list_dashboards()["DashboardEntries"]] == [f"{NAME}-async"]
    assert cw.describe_alarms(AlarmNamePrefix=f"{NAME}-")["MetricAlarms"] == []


def test_deploy_without_monitoring_and_refusing_a_foreign_dashboard(ahi_spleen, client, uploaded) -> None:
    out = _deploy(ahi_spleen, "deploy-realtime", "--no-monitoring")
    assert out["result"]["monitoring"] is None
    cw = client("cloudwatch")
    assert cw.list_dashboards()["DashboardEntries"] == []
    cw.put_dashboard(DashboardName=f"{NAME}-rt", DashboardBody=json.dumps({"widgets": []}))
    with pytest.raises(AwsCliError, match=f"dashboard {NAME}-rt exists and was not made by ahi-spleen"):
        _deploy(ahi_spleen, "deploy-realtime")

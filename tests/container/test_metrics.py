"""EMF lines of container.metrics, parsed and checked by the EMF specification's rules (emf_checks)."""

from __future__ import annotations

import json

import pytest

from container.metrics import NAMESPACE, emit_input_metrics, stage_metric, volume_bucket
from tests.container.emf_checks import emf_lines, emf_problems

SUCCEEDED = {
    "index": 0,
    "input": {"datastoreId": "d" * 32, "imageSetId": "i" * 32},
    "status": "succeeded",
    "spleenVolumeMl": 212.5,
    "seconds": 31.25,
    "report": {
        "model": {"name": "spleen_ct_segmentation", "version": "0.1.0"},
        "fetch": {"frames": 56, "frameRetries": 2, "throttles": 3},
        "timingsSeconds": {"fetch_decode": 1.5, "inference": 20.0, "preview": 0.4, "total": 28.0},
    },
}
FAILED = {
    "index": 1,
    "input": {"datastoreId": "d" * 32, "imageSetId": "0" * 32},
    "status": "failed",
    "error": {"type": "ImageSetNotFoundError", "message": "...", "httpStatus": 404},
    "seconds": 0.2,
}


def _emitted(capsys, request_id: str, entry: dict) -> dict:
    emit_input_metrics(request_id, entry)
    (doc,) = emf_lines(capsys.readouterr().out)
    assert emf_problems(doc) == []
    return doc


def test_succeeded_input_line_is_valid_emf_with_the_entry_values(capsys):
    doc = _emitted(capsys, "req-1", SUCCEEDED)
    directive, breakdown = doc["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == breakdown["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [["Service"]]
    assert breakdown["Dimensions"] == [["Service", "Outcome"], ["Service", "VolumeBucket"]]
    assert [m["Name"] for m in breakdown["Metrics"]] == ["Inputs", "InputsFailed"]
    names = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    report = SUCCEEDED["report"]
    for stage, seconds in report["timingsSeconds"].items():
        if stage != "total":
            assert names[stage_metric(stage)] == "Seconds" and doc[stage_metric(stage)] == seconds
    assert (doc["FramesFetched"], doc["FrameRetries"], doc["Throttles"]) == tuple(report["fetch"].values())
    assert doc["SpleenVolumeMl"] == SUCCEEDED["spleenVolumeMl"] and names["SpleenVolumeMl"] == "None"
    assert (doc["Inputs"], doc["InputsFailed"], doc["InputSeconds"]) == (1, 0, SUCCEEDED["seconds"])
    assert doc["Outcome"] == "succeeded" and doc["VolumeBucket"] == volume_bucket(212.5)
    assert doc["RequestId"] == "req-1" and "RequestId" not in {d for s in directive["Dimensions"] for d in s}


def test_failed_input_line_counts_the_failure_by_outcome(capsys):
    doc = _emitted(capsys, "req-2", FAILED)
    assert (doc["Inputs"], doc["InputsFailed"]) == (1, 1)
    assert doc["Outcome"] == "client_error" and doc["ErrorType"] == "ImageSetNotFoundError"
    assert doc["VolumeBucket"] == "none" and "SpleenVolumeMl" not in doc
    server = _emitted(capsys, "req-3", {**FAILED, "error": {"type": "InternalError", "httpStatus": 500}})
    assert server["Outcome"] == "server_error"


def test_one_json_object_per_line_and_off_switch(capsys, monkeypatch):
    emit_input_metrics("req-4", SUCCEEDED)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out)["RequestId"] == "req-4"
    monkeypatch.setenv("SPLEEN_METRICS", "off")
    emit_input_metrics("req-5", SUCCEEDED)
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("SPLEEN_METRICS", "on")
    monkeypatch.setenv("SPLEEN_METRICS_NAMESPACE", "Custom/Spleen")
    assert (
        _emitted(capsys, "req-6", SUCCEEDED)["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Custom/Spleen"
    )


@pytest.mark.parametrize(
    ("volume", "bucket"),
    [
        (None, "none"),
        (0.0, "empty"),
        (0.5, "lt150mL"),
        (150.0, "150to300mL"),
        (499.9, "300to500mL"),
        (500.0, "ge500mL"),
    ],
)
def test_volume_buckets(volume, bucket):
    assert volume_bucket(volume) == bucket


def test_the_checker_rejects_what_the_spec_forbids():
    good = {
        "_aws": {
            "Timestamp": 1_700_000_000_000,
            "CloudWatchMetrics": [
                {"Namespace": "N", "Dimensions": [["Service"]], "Metrics": [{"Name": "M", "Unit": "Count"}]}
            ],
        },
        "Service": "s",
        "M": 1,
    }
    assert emf_problems(good) == []
    directive = good["_aws"]["CloudWatchMetrics"][0]
    cases = [
        ({**good, "M": "1"}, "metric M: value '1'"),
        ({**good, "M": list(range(101))}, "metric M: value"),
        ({k: v for k, v in good.items() if k != "Service"}, "dimension 'Service' is not a top-level string"),
        (
            {
                **good,
                "_aws": {
                    **good["_aws"],
                    "CloudWatchMetrics": [{**directive, "Dimensions": [[f"D{i}" for i in range(31)]]}],
                },
            },
            "dimension set",
        ),
        (
            {
                **good,
                "_aws": {
                    **good["_aws"],
                    "CloudWatchMetrics": [{**directive, "Metrics": [{"Name": "M", "Unit": "Milliliters"}]}],
                },
            },
            "unit 'Milliliters' is not a CloudWatch unit",
        ),
        ({**good, "_aws": {**good["_aws"], "Timestamp": 1_700_000_000}}, "is not epoch milliseconds"),
    ]
    for doc, problem in cases:
        assert any(problem in p for p in emf_problems(doc)), (problem, emf_problems(doc))

"""The innermost door: ``app.service`` in this process (what the container handler and inference.py call).

Bad requests raise the app's errors with an HTTP status and a message naming the problem; the same service
object then segments a good image set (no reload, no poisoned state after a failed run)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ahi_connector import AHIError
from app.errors import AppError, RequestError
from devstack.clients import ahi_client
from tests.reliability.conftest import Stack

UNKNOWN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def service(stack: Stack) -> Iterator[Any]:
    from app.service import SpleenSegService

    svc = SpleenSegService(
        stack.models / "extracted" / "spleen_ct_segmentation", ahi_client=ahi_client(stack.ahi.url)
    )
    yield svc
    svc.close()


@pytest.mark.parametrize(
    ("request_obj", "reason"),
    [
        (b"\xff\xfe not json", r"request body is not valid JSON"),
        ("[]", r"request must be a JSON object .* got list"),
        ({"datastoreId": "a" * 32}, r"needs exactly one of 'imageSetId' or 'studyInstanceUid', got neither"),
        ({"datastoreId": "a" * 32, "imageSetId": "b" * 32, "studyInstanceUid": "1.2"}, r"got both"),
        ({"imageSetId": "b" * 32}, r"request is missing 'datastoreId'"),
        (
            {"datastoreId": "a" * 32, "imageSetId": "b" * 32, "extra": 1},
            r"unknown key\(s\) in request: 'extra'",
        ),
        ({"datastoreId": "a" * 31, "imageSetId": "b" * 32}, r"'datastoreId' must be an AWS HealthImaging ID"),
        ({"datastoreId": "a" * 32, "imageSetId": None}, r"'imageSetId' must be .* got None"),
        ({"dicomFolder": "/etc"}, r"unknown key\(s\) in request: 'dicomFolder'"),
    ],
)
def test_malformed_requests(service: Any, tmp_path: Path, request_obj: Any, reason: str) -> None:
    with pytest.raises(RequestError, match=reason) as info:
        service.run(request_obj, tmp_path / "out")
    assert info.value.http_status == 400


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("unknown", 404, rf"image set {UNKNOWN_ID}"),
        ("mr_only", 422, r"no CT series .*series found: .* \(MR\)"),
        ("one_slice", 422, r"1 (slice|instance)"),
        ("rgb", 422, r"\(0028,0004\) Photometric Interpretation 'RGB'"),
    ],
)
def test_unusable_inputs_then_a_good_run(
    service: Any, stack: Stack, tmp_path: Path, case: str, status: int, reason: str
) -> None:
    """Each failure first (a fresh service's first run failing is the hard case), then a good run."""
    request = (
        {"datastoreId": stack.datastore_id, "imageSetId": UNKNOWN_ID}
        if case == "unknown"
        else stack.cases[case].request()
    )
    with pytest.raises((AppError, AHIError)) as info:
        service.run(request, tmp_path / "bad")
    assert info.value.http_status == status
    assert re.search(reason, str(info.value)), str(info.value)
    good = stack.cases["good0"]
    result = service.run(good.request(), tmp_path / "good")
    assert result.report["seriesInstanceUid"] == good.series_uid
    assert result.report["sliceCount"] == good.slices
    assert result.seg_path.is_file()


# Issue 14, item 11 (the service fixture above is reused: one model load per module).
def test_inputs_past_the_time_budget_are_not_started(stack: Stack, service: Any, tmp_path: Path) -> None:
    """Inputs run one after another; once the next one would not finish within the request's budget, the
    rest are answered notStarted (413, naming them) and the finished result is kept, instead of MMS killing
    the worker at its timeout with every result lost."""
    from container.handler import request_time_budget_s
    from container.invocation import run_invocation
    from container.payload import parse_invocation

    names = ["good0", "good1", "good2"]
    invocation = parse_invocation(json.dumps({"inputs": [stack.cases[n].request() for n in names]}))
    result = run_invocation(service, invocation, "budget-test", work_root=tmp_path, time_budget_s=0.5)
    assert result.status == 413
    assert result.body["error"]["type"] == "TimeBudgetExceededError"
    assert "inputs[1..2] not started" in result.body["error"]["message"]
    assert "another request" in result.body["error"]["message"]
    assert [r["status"] for r in result.body["results"]] == ["succeeded", "notStarted", "notStarted"]
    assert result.body["results"][0]["report"]["seriesInstanceUid"] == stack.cases["good0"].series_uid
    assert request_time_budget_s(600) == 540  # the handler's budget: 90 % of the response timeout

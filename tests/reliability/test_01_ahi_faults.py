"""AHI faults injected in ahi-local (and in the proxy in front of it) during an invoke through the real stack.

Retriable faults (throttling, 5xx, slow answers, a corrupt answer now and then, connection resets, ahi-local
crashing and coming back mid-export) must end in the same segmentation as the fault-free run, every frame
verified. Permanent faults (a frame that always fails, is always corrupt, or never answers) must end in a
clear error naming the image set and the frame, within the configured deadline, and the worker keeps serving.
"""

from __future__ import annotations

import base64
import random
import threading
from typing import Any

import pytest

from tests.reliability.conftest import EXPORT_DEADLINE_S, TIMEOUT_S, Stack, original, read_seg


def _segment(stack: Stack, case_name: str = "good0") -> tuple[dict[str, Any], bytes, int]:
    """Invoke once with the SEG inline: (result entry, SEG PixelData, AHI requests the container sent)."""
    before = stack.proxy.requests
    out = stack.invoke(stack.cases[case_name].body(inlineSeg=True))
    (result,) = out["results"]
    assert result["status"] == "succeeded", result
    seg = read_seg(base64.b64decode(result["seg"]["base64"]))
    return result, seg.PixelData, stack.proxy.requests - before


@pytest.fixture(scope="module")
def baseline(stack: Stack) -> tuple[dict[str, Any], bytes, int]:
    result, pixels, requests = _segment(stack)
    case = stack.cases["good0"]
    assert result["report"]["sliceCount"] == case.slices
    assert result["report"]["imageSetIds"] == [case.image_set_id]
    assert requests >= case.slices  # every frame came through the proxy
    assert result["report"]["fetch"] == {"frames": case.slices, "frameRetries": 0, "throttles": 0}
    return result, pixels, requests


def _same_as_baseline(baseline, result: dict[str, Any], pixels: bytes) -> None:
    base_result, base_pixels, _ = baseline
    assert result["report"]["seriesInstanceUid"] == base_result["report"]["seriesInstanceUid"]
    assert result["report"]["sliceCount"] == base_result["report"]["sliceCount"]
    assert result["report"]["spleen"] == base_result["report"]["spleen"]
    assert pixels == base_pixels, "the SEG differs from the fault-free run"


def _seed_without_long_runs(rate: float, rolls: int = 40, longest: int = 2) -> int:
    """A seed whose first ``rolls`` fault rolls never fail more than ``longest`` times in a row (botocore
    gives a metadata call 4 attempts): deterministic, and still throttled about ``rate`` of the time."""
    for seed in range(1000):
        rng, run, worst, hits = random.Random(seed), 0, 0, 0
        for _ in range(rolls):
            hit = rng.random() < rate
            hits += hit
            run = run + 1 if hit else 0
            worst = max(worst, run)
        if worst <= longest and hits >= rate * rolls * 0.8:
            return seed
    raise AssertionError("no seed found")


def test_throttling_bursts_are_retried(stack, baseline, faults):
    seed = _seed_without_long_runs(0.5)
    faults.faults(
        throttle_rate=0.5, seed=seed, operations=["GetImageSet", "GetImageSetMetadata", "GetImageFrame"]
    )
    result, pixels, requests = _segment(stack)
    _same_as_baseline(baseline, result, pixels)
    assert requests >= stack.cases["good0"].slices + 8, "no request was throttled: the fault was not injected"
    fetch = result["report"]["fetch"]  # what the endpoint's Throttles metric reports
    assert fetch["frames"] == stack.cases["good0"].slices
    assert 1 <= fetch["throttles"] <= requests - fetch["frames"]


def test_server_errors_are_retried(stack, baseline, faults):
    faults.faults(error_rate=0.3, seed=_seed_without_long_runs(0.3), operations=["GetImageFrame"])
    result, pixels, requests = _segment(stack)
    _same_as_baseline(baseline, result, pixels)
    assert requests >= stack.cases["good0"].slices + 4
    assert result["report"]["fetch"]["throttles"] == 0  # 500s are retried, but they are not throttling


def test_slow_answers_still_succeed(stack, baseline, faults):
    faults.faults(latency_ms=250)
    result, pixels, _ = _segment(stack)
    _same_as_baseline(baseline, result, pixels)
    assert result["report"]["timingsSeconds"]["fetch_decode"] >= 0.25


def _seed_with_few_hits(rate: float, rolls: int, early: int, min_hits: int, max_hits: int) -> int:
    """A seed whose first ``rolls`` rolls hit between ``min_hits`` (all within the first ``early``) and
    ``max_hits`` times: fewer hits than the connector's frame attempts, so no frame can fail on every
    attempt however the concurrent requests interleave."""
    for seed in range(10_000):
        rng = random.Random(seed)
        hits = [rng.random() < rate for _ in range(rolls)]
        if sum(hits[:early]) >= min_hits and sum(hits) <= max_hits:
            return seed
    raise AssertionError("no seed found")


def test_occasional_corrupt_frames_are_refetched(stack, baseline, faults):
    faults.faults(corrupt_rate=0.1, seed=_seed_with_few_hits(0.1, rolls=60, early=25, min_hits=3, max_hits=4))
    result, pixels, requests = _segment(stack)
    _same_as_baseline(baseline, result, pixels)
    assert requests >= stack.cases["good0"].slices + 3


def test_connection_resets_are_retried(stack, baseline, faults):
    """Ten GetImageFrame requests answered with a TCP reset (by the proxy in front of ahi-local)."""
    before = stack.proxy.resets_done
    stack.proxy.reset_next(10, match=b"/getImageFrame ")
    result, pixels, _ = _segment(stack)
    _same_as_baseline(baseline, result, pixels)
    assert stack.proxy.resets_done - before == 10


def test_metadata_connection_lost_is_a_clear_502(stack, faults):
    """GetImageSet reset on all of botocore's 4 attempts: a 502 naming the image set, not a bare 500."""
    case = stack.cases["good1"]
    stack.proxy.reset_next(4, match=b"/getImageSet ")
    response, _ = stack.invoke_error(case.body())
    body = original(response)
    assert response["OriginalStatusCode"] == 502, body
    assert body["error"]["type"] == "AHIRequestError", body
    expected = f"GetImageSet for image set {case.image_set_id} (datastore {case.datastore_id})"
    assert expected in body["error"]["message"]
    assert "Connection" in body["error"]["message"]
    stack.proxy.reset_next(3, match=b"/getImageSet ")  # fewer than botocore's attempts: retried, succeeds
    assert stack.invoke(case.body())["results"][0]["status"] == "succeeded"


def test_ahi_local_crash_and_restart_mid_export(stack, baseline, faults):
    """SIGKILL ahi-local while a frame is in flight, start it again on the same store: the export resumes."""
    case = stack.cases["good0"]
    frame = case.frame_ids[7]
    faults.faults(hang_frames=[frame], hang_seconds=60)
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = _segment(stack)
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    try:
        faults.wait_log(f"hanging GetImageFrame {frame}")
        faults.crash()
        faults.start()  # same port and store; a fresh process has no faults
    finally:
        thread.join(timeout=TIMEOUT_S * 2)
    assert "error" not in outcome, outcome.get("error")
    result, pixels, _ = outcome["value"]
    _same_as_baseline(baseline, result, pixels)


def _assert_names(error: dict[str, Any], case, frame: str) -> None:
    message = error["message"]
    assert case.image_set_id in message and frame in message, message


def test_frame_that_always_fails_is_a_clear_502(stack, faults):
    case = stack.cases["good1"]
    frame = case.frame_ids[5]
    faults.faults(fail_frames=[frame])
    response, seconds = stack.invoke_error(case.body())
    body = original(response)
    assert response["OriginalStatusCode"] in (502, 504), body  # retries exhausted, or the deadline hit first
    assert body["error"]["type"] in ("FrameFetchError", "ExportDeadlineError"), body
    _assert_names(body["error"], case, frame)
    assert seconds < TIMEOUT_S
    assert body["results"][0]["status"] == "failed"


def test_frame_that_is_always_corrupt_is_a_clear_502(stack, faults):
    case = stack.cases["good1"]
    frame = case.frame_ids[0]
    faults.faults(corrupt_frames=[frame])
    response, _ = stack.invoke_error(case.body())
    body = original(response)
    assert response["OriginalStatusCode"] == 502, body
    assert body["error"]["type"] in ("FrameChecksumError", "FrameDecodeError"), body
    assert "attempts" in body["error"]["message"]
    _assert_names(body["error"], case, frame)


def test_frame_that_never_answers_ends_at_the_export_deadline(stack, faults):
    """Not a hang, and not MMS's bare 'Worker died.' at its response timeout: a 504 naming the frame."""
    case = stack.cases["good2"]
    frame = case.frame_ids[4]
    faults.faults(hang_frames=[frame], hang_seconds=TIMEOUT_S * 2)
    response, seconds = stack.invoke_error(case.body())
    body = original(response)
    assert response["OriginalStatusCode"] == 504, body
    assert body["error"]["type"] == "ExportDeadlineError"
    assert f"deadline of {EXPORT_DEADLINE_S:.1f} s" in body["error"]["message"]
    _assert_names(body["error"], case, frame)
    assert EXPORT_DEADLINE_S <= seconds < TIMEOUT_S
    faults.clear_faults()
    # The worker was not killed: the next request is served (by either worker) without a model reload.
    out = stack.invoke(stack.cases["good3"].body())
    assert out["results"][0]["status"] == "succeeded"
    assert f'"POST /models/{stack.model_name()}/invoke HTTP/1.1" 500' not in stack.container.log_text()

"""Bounded concurrent load through the gateway: 8 clients x 10 requests, good and bad mixed.

No cross-talk (each response carries its own input: series UID for good ones, its own unique unknown ID for
the 404s), unique request IDs, no temporary files or worker processes left behind, worker memory back near its
baseline."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import botocore.exceptions
import psutil

from tests.reliability.conftest import Stack, original

CLIENTS = 8
#: Each client's sequence: "good" (a series of its own), "bad-json", "unknown" (an image set ID unique to this
#: request), "no-ct", "bad-target".
PLAN = [
    "good",
    "bad-json",
    "unknown",
    "good",
    "no-ct",
    "bad-target",
    "unknown",
    "good",
    "bad-json",
    "unknown",
]
LOAD_TIMEOUT_S = 420.0
#: Allowed growth of the workers' resident memory after the burst (allocator caches, torch thread pools).
RSS_SLACK = 1.25
RSS_SLACK_MB = 300


def _workers(stack: Stack) -> list[psutil.Process]:
    return [p for p in stack.container.tree() if "model_service_worker" in " ".join(p.cmdline())]


def _rss_mb(procs: list[psutil.Process]) -> float:
    return sum(p.memory_info().rss for p in procs) / 2**20


def _one(stack: Stack, client: int, step: int, kind: str) -> dict[str, Any]:
    """Run one request of the plan; returns what to check."""
    case = stack.cases[f"good{client % 4}"]
    unknown = f"{client:02d}{step:02d}" + "e" * 28
    target = "model.tar.gz"
    if kind == "good":
        body = case.body()
    elif kind == "bad-json":
        body = b'{"inputs": [' + str(client).encode()
    elif kind == "unknown":
        body = json.dumps({"inputs": [{"datastoreId": stack.datastore_id, "imageSetId": unknown}]}).encode()
    elif kind == "no-ct":
        body = stack.cases["mr_only"].body()
    else:
        body, target = case.body(), f"absent-{client}-{step}.tar.gz"
    rt = stack.runtime()
    try:
        resp = rt.invoke_endpoint(
            EndpointName="spleen", TargetModel=target, ContentType="application/json", Body=body
        )
        return {"kind": kind, "case": case, "unknown": unknown, "ok": json.loads(resp["Body"].read())}
    except botocore.exceptions.ClientError as exc:
        return {"kind": kind, "case": case, "unknown": unknown, "target": target, "error": exc.response}


def _client(stack: Stack, client: int) -> list[dict[str, Any]]:
    return [_one(stack, client, step, kind) for step, kind in enumerate(PLAN)]


def _check(outcome: dict[str, Any]) -> str | None:
    """The request ID of the container's answer (None for gateway-level errors)."""
    kind, case = outcome["kind"], outcome["case"]
    if kind == "good":
        assert "ok" in outcome, outcome.get("error")
        (result,) = outcome["ok"]["results"]
        assert result["input"] == case.request()
        assert result["report"]["seriesInstanceUid"] == case.series_uid
        assert result["report"]["imageSetIds"] == [case.image_set_id]
        assert result["report"]["sliceCount"] == case.slices
        return outcome["ok"]["requestId"]
    error = outcome["error"]
    if kind == "bad-target":
        assert error["Error"]["Code"] == "ValidationError"
        assert f"TargetModel '{outcome['target']}'" in error["Error"]["Message"]
        return None
    body = original(error)
    status, text = body["error"]["httpStatus"], body["error"]["message"]
    if kind == "bad-json":
        assert status == 400 and "not valid JSON" in text, body
    elif kind == "unknown":
        assert status == 404 and outcome["unknown"] in text, body
        assert body["results"][0]["input"]["imageSetId"] == outcome["unknown"]
    else:
        assert status == 422 and body["error"]["type"] == "NoCTSeriesError", body
    return body["requestId"]


def test_eight_clients_mixed_good_and_bad(stack: Stack) -> None:
    for name in ("good0", "good1"):  # warm both workers before measuring the baseline
        stack.invoke(stack.cases[name].body())
    workers_before = {p.pid for p in _workers(stack)}
    assert len(workers_before) >= 2
    rss_before = _rss_mb(_workers(stack))
    tmp_before = sorted(p.name for p in (stack.runtime_dir / "tmp").iterdir())

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(_client, stack, c) for c in range(CLIENTS)]
        outcomes = [o for f in futures for o in f.result(timeout=LOAD_TIMEOUT_S)]
    elapsed = time.monotonic() - started

    assert len(outcomes) == CLIENTS * len(PLAN)
    request_ids = [rid for rid in map(_check, outcomes) if rid is not None]
    assert len(request_ids) == len(set(request_ids)), "two responses share a request ID"

    assert list(stack.work_dir.iterdir()) == [], "per-request working directories left behind"
    assert sorted(p.name for p in (stack.runtime_dir / "tmp").iterdir()) == tmp_before
    workers_after = {p.pid for p in _workers(stack)}
    assert workers_after == workers_before, "a worker died or a stray worker was started"
    rss_after = _rss_mb(_workers(stack))
    assert rss_after <= rss_before * RSS_SLACK + RSS_SLACK_MB, (rss_before, rss_after)
    print(f"load: {len(outcomes)} requests, {elapsed:.1f} s, RSS {rss_before:.0f} -> {rss_after:.0f} MB")

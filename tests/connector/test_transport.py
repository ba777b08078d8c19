"""The lean GetImageFrame transport against botocore (the reference), on a dedicated ahi-local with faults.

Same bytes and content type for every frame; the same botocore exception (class, error code, HTTP status,
message) for every fault ahi-local can inject and for a dead endpoint; the same connector error at the
exporter level; automatic selection; the AIMD limiter's arithmetic and pacing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import botocore.exceptions as bce
import numpy as np
import pytest

from ahi_connector import (
    AHIConfigError,
    FrameChecksumError,
    FrameDecodeError,
    FrameFetchError,
    FrameRef,
    ImageSetExporter,
    RetryPolicy,
    make_ahi_client,
)
from ahi_connector.fetch import AdaptiveLimiter
from ahi_connector.transport import (
    BotocoreFrameTransport,
    LeanFrameTransport,
    select_transport,
)
from devstack.processes import ahi_local_server, free_port
from devstack.synthetic import SeriesSpec
from tests.connector.conftest import ImportedCase, dummy_session, import_cases, set_faults

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture(scope="module")
def service(moto_s3, tmp_path_factory) -> Iterator[tuple[str, ImportedCase]]:
    with ahi_local_server(
        tmp_path_factory.mktemp("transport-store"), s3_endpoint_url=moto_s3, extra_args=["--enable-faults"]
    ) as url:
        cases = import_cases(
            url,
            moto_s3,
            tmp_path_factory.mktemp("transport-dicom"),
            {"ct": SeriesSpec(slices=12, rows=40, columns=40), "rgb": SeriesSpec(
                slices=2, bits_allocated=8, bits_stored=8, signed=False, photometric="RGB")},
        )  # fmt: skip
        yield url, cases["ct"]


@pytest.fixture
def faults(service):
    url, _ = service
    yield lambda **kw: set_faults(url, **kw)
    set_faults(
        url,
        throttle_rate=0,
        error_rate=0,
        fail_frames=[],
        corrupt_frames=[],
        hang_frames=[],
        operations=[],
        hang_seconds=300,
        seed=None,
    )


def _client(url: str, **kw: Any) -> Any:
    return make_ahi_client(url, session=dummy_session(), max_attempts=1, **kw)


def _refs(url: str, case: ImportedCase) -> list[FrameRef]:
    with ImageSetExporter(_client(url)) as ex:
        meta = ex.get_metadata(case.datastore_id, case.image_set_id)
        return [meta.frame_ref(inst, f) for inst in meta.iter_instances() for f in inst.frames]


def _outcome(transport: Any, ref: FrameRef) -> tuple[Any, ...]:
    """What one request gives: ('ok', bytes, content type) or the exception's comparable parts (the message
    without botocore's "(reached max retries: N)", which counts botocore's own retries: the lean transport
    makes one attempt per call and leaves retries to the frame fetcher)."""
    try:
        data, content_type = transport.get_frame(ref)
    except bce.ClientError as exc:
        return ("client-error", type(exc).__name__, exc.response["Error"],
                exc.response["ResponseMetadata"]["HTTPStatusCode"],
                re.sub(r" \(reached max retries: \d+\)", "", str(exc)))  # fmt: skip
    except bce.BotoCoreError as exc:
        return ("botocore-error", type(exc).__name__)
    return ("ok", data, content_type)


def test_auto_selects_the_lean_transport_and_falls_back_to_botocore(service, monkeypatch):
    url, _ = service
    client = _client(url)
    assert isinstance(select_transport(client), LeanFrameTransport)
    assert isinstance(select_transport(client, "botocore"), BotocoreFrameTransport)
    assert isinstance(select_transport(object()), BotocoreFrameTransport)  # not a botocore client
    with pytest.raises(AHIConfigError, match="not a botocore medical-imaging client"):
        select_transport(object(), "lean")
    with pytest.raises(AHIConfigError, match="transport='http2' is not one of"):
        select_transport(client, "http2")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:1")
    assert isinstance(select_transport(client), BotocoreFrameTransport)  # proxies: botocore handles them


def test_same_bytes_and_content_type_for_every_frame(service):
    url, case = service
    client = _client(url)
    lean, reference = select_transport(client, "lean"), select_transport(client, "botocore")
    refs = _refs(url, case)
    for ref in refs:
        got, want = _outcome(lean, ref), _outcome(reference, ref)
        assert got[0] == "ok" and got == want, ref.frame_id
    with ImageSetExporter(client, transport="lean") as a, ImageSetExporter(client, transport="botocore") as b:
        va = a.to_volume(case.datastore_id, case.image_set_id, rescale=False)
        vb = b.to_volume(case.datastore_id, case.image_set_id, rescale=False)
        assert a.last_stats.transport == "lean" and b.last_stats.transport == "botocore"
    np.testing.assert_array_equal(va.array, vb.array)
    np.testing.assert_array_equal(va.array, np.stack(case.written.pixels))


@pytest.mark.parametrize(
    "fault",
    [
        {"fail_frames": "target"},
        {"corrupt_frames": "target"},
        {"throttle_rate": 1.0, "operations": ["GetImageFrame"]},
        {"error_rate": 1.0, "operations": ["GetImageFrame"]},
        {"unknown_frame": True},
        {"unknown_image_set": True},
    ],
    ids=["failing-frame", "corrupt-frame", "throttled", "5xx", "unknown-frame", "unknown-image-set"],
)
def test_same_exception_for_every_fault(service, faults, fault):
    url, case = service
    client = _client(url)
    lean, reference = select_transport(client, "lean"), select_transport(client, "botocore")
    ref = _refs(url, case)[4]
    settings = dict(fault)
    if settings.pop("unknown_frame", False):
        ref = FrameRef(ref.datastore_id, ref.image_set_id, ref.series_uid, ref.sop_instance_uid, "f" * 32)
    if settings.pop("unknown_image_set", False):
        ref = FrameRef(ref.datastore_id, "e" * 32, ref.series_uid, ref.sop_instance_uid, ref.frame_id)
    settings = {k: ([ref.frame_id] if v == "target" else v) for k, v in settings.items()}
    if settings:
        faults(**settings)
    got, want = _outcome(lean, ref), _outcome(reference, ref)
    assert got == want
    if "corrupt_frames" not in settings:
        assert got[0] == "client-error"


def test_same_exception_for_a_dead_endpoint_and_a_read_timeout(service, faults):
    url, case = service
    ref = _refs(url, case)[2]
    dead = _client(f"http://127.0.0.1:{free_port()}")
    assert _outcome(select_transport(dead, "lean"), ref) == _outcome(
        select_transport(dead, "botocore"), ref
    ) == ("botocore-error", "EndpointConnectionError")  # fmt: skip
    faults(hang_frames=[ref.frame_id], hang_seconds=5)
    slow = _client(url, read_timeout=1.0)
    assert _outcome(select_transport(slow, "lean"), ref) == _outcome(
        select_transport(slow, "botocore"), ref
    ) == ("botocore-error", "ReadTimeoutError")  # fmt: skip


@pytest.mark.parametrize("fault", ["fail_frames", "corrupt_frames"])
def test_same_connector_error_through_the_exporter(service, faults, fault):
    url, case = service
    client = _client(url)
    bad = _refs(url, case)[6]
    faults(**{fault: [bad.frame_id]})
    errors = []
    for transport in ("lean", "botocore"):
        with ImageSetExporter(client, transport=transport, retry=FAST_RETRY) as ex:
            with pytest.raises((FrameFetchError, FrameChecksumError, FrameDecodeError)) as info:
                ex.to_volume(case.datastore_id, case.image_set_id)
        err = info.value
        errors.append((type(err), err.http_status, err.frame, str(err).split("; last error")[0]))
    assert errors[0] == errors[1]
    assert errors[0][2].frame_id == bad.frame_id


def test_throttling_halves_concurrency_and_the_export_still_succeeds(service, faults):
    url, case = service
    faults(throttle_rate=0.5, seed=3, operations=["GetImageFrame"])
    with ImageSetExporter(_client(url), max_workers=8, retry=FAST_RETRY) as ex:
        vol = ex.to_volume(case.datastore_id, case.image_set_id, rescale=False)
        limiter = ex.fetcher.limiter
    np.testing.assert_array_equal(vol.array, np.stack(case.written.pixels))
    assert limiter.throttled > 0 and limiter.lowest < 8


def test_limiter_arithmetic_and_pacing():
    limiter = AdaptiveLimiter(16, max_tps=1000)
    never = threading.Event()
    assert limiter.acquire(never)
    limiter.release(throttled=True)
    assert limiter.limit == 8.0
    for _ in range(8):  # one window of successes grows the limit by about one
        assert limiter.acquire(never)
        limiter.release(throttled=False)
    assert 8.9 < limiter.limit < 9.1
    first = limiter._next_slot
    for _ in range(50):
        assert limiter.acquire(never)
        limiter.release(throttled=False)
    assert limiter._next_slot - first >= 50 / 1000 - 1e-9  # slots 1 ms apart: never over 1000 per second
    with pytest.raises(ValueError, match="invalid limits"):
        AdaptiveLimiter(4, max_tps=0)

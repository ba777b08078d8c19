"""Fault injection through a dedicated ahi-local: throttling/5xx recovered; failing, corrupt and hung frames
end in a clear exception naming the frame, within the deadline, with no leaked worker processes."""

from __future__ import annotations

import numpy as np
import psutil
import pytest

from ahi_connector import (
    ExportDeadlineError,
    FrameChecksumError,
    FrameDecodeError,
    FrameFetchError,
    ImageSetExporter,
    RetryPolicy,
    make_ahi_client,
)
from devstack.processes import ahi_local_server
from devstack.synthetic import SeriesSpec
from tests.connector.conftest import dummy_session, import_cases, set_faults

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.1)


@pytest.fixture(scope="module")
def faulty(moto_s3, tmp_path_factory):
    """A separate ahi-local (own store) whose faults the tests switch at runtime; yields (url, case)."""
    with ahi_local_server(
        tmp_path_factory.mktemp("faulty-store"), s3_endpoint_url=moto_s3, extra_args=["--enable-faults"]
    ) as url:
        cases = import_cases(
            url,
            moto_s3,
            tmp_path_factory.mktemp("faulty-dicom"),
            {"ct": SeriesSpec(slices=24, rows=32, columns=32)},
        )
        yield url, cases["ct"]


@pytest.fixture
def faults(faulty):
    url, _ = faulty
    yield lambda **kw: set_faults(url, **kw)
    set_faults(
        url, throttle_rate=0, error_rate=0, fail_frames=[], corrupt_frames=[], hang_frames=[], seed=None
    )


def _exporter(url, attempts=3, **kw):
    client = make_ahi_client(url, session=dummy_session(), max_attempts=attempts)
    return ImageSetExporter(client, retry=FAST_RETRY, **kw)


def _frame_ids(ex, case):
    meta = ex.get_metadata(case.datastore_id, case.image_set_id)
    return [f.id for inst in meta.iter_instances() for f in inst.frames]


def test_throttling_and_5xx_are_retried_and_every_frame_is_correct(faulty, faults):
    url, case = faulty
    faults(throttle_rate=0.10, error_rate=0.05, seed=7)
    # every operation is faulted: 6 botocore attempts keep metadata calls from failing by chance (0.15**6)
    with _exporter(url, attempts=6, max_workers=4) as ex:
        for _ in range(3):
            vol = ex.to_volume(case.datastore_id, case.image_set_id, rescale=False)
            np.testing.assert_array_equal(vol.array, np.stack(case.written.pixels))
            datasets = ex.to_datasets(case.datastore_id, case.image_set_id)
            for ds, src in zip(datasets, case.written.pixels, strict=True):
                np.testing.assert_array_equal(ds.pixel_array, src)


def test_frame_that_always_fails_names_the_frame(faulty, faults):
    url, case = faulty
    with _exporter(url, decoder="openjpeg", deadline_s=60) as ex:
        bad = _frame_ids(ex, case)[5]
        faults(fail_frames=[bad])
        with pytest.raises(
            FrameFetchError,
            match=rf"frame {bad} \(frame #1 of instance .*image set "
            rf"{case.image_set_id}.*failed 4 times.*InternalServerException",
        ):
            ex.to_datasets(case.datastore_id, case.image_set_id)
        faults(fail_frames=[])  # the same exporter (same persistent pools) works after a failed export
        datasets = ex.to_datasets(case.datastore_id, case.image_set_id)
        assert ex.last_stats.backends == {"openjpeg": 24} and len(datasets) == 24
        assert len(_spawned_workers()) >= 1
    assert _spawned_workers() == [], "decoder worker processes leaked"


def _spawned_workers() -> list[int]:
    """Live multiprocessing workers of this process (multiprocessing's own resource tracker is not a
    worker)."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("spawn_main" in part for part in proc.cmdline()):
                out.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return out


def test_corrupt_frame_fails_verification_and_names_the_frame(faulty, faults):
    url, case = faulty
    with _exporter(url) as ex:
        bad = _frame_ids(ex, case)[3]
        faults(corrupt_frames=[bad])
        # the same garbled bytes come back on the second attempt: deterministic, so not retried 4 times
        with pytest.raises(
            (FrameChecksumError, FrameDecodeError),
            match=rf"frame {bad} .*on 2 attempts \(the same bytes were served each time",
        ):
            ex.to_volume(case.datastore_id, case.image_set_id)


def test_hung_frame_hits_the_deadline_not_a_hang(faulty, faults):
    url, case = faulty
    with _exporter(url, deadline_s=3.0) as ex:
        bad = _frame_ids(ex, case)[0]
        faults(hang_frames=[bad], hang_seconds=6)
        with pytest.raises(
            ExportDeadlineError,
            match=rf"exceeded its deadline of 3\.0 s with 1 frame\(s\) "
            rf"outstanding, e\.g\. frame {bad}",
        ):
            ex.to_datasets(case.datastore_id, case.image_set_id)


def test_throttled_calls_are_counted_and_other_errors_are_not(faulty, faults):
    """The exporter's throttle count (for the endpoint's metrics) sees botocore's retried attempts too."""
    url, case = faulty
    with _exporter(url, attempts=6, max_workers=4) as ex:
        faults(throttle_rate=0, error_rate=0.1, seed=11)  # 0.1**4 per frame: no frame runs out of attempts
        ex.to_volume(case.datastore_id, case.image_set_id, rescale=False)
        assert ex.throttled_calls == 0  # 500s are retried but are not throttling
        faults(throttle_rate=0.3, error_rate=0, seed=11)
        vol = ex.to_volume(case.datastore_id, case.image_set_id, rescale=False)
        np.testing.assert_array_equal(vol.array, np.stack(case.written.pixels))
        # 24 frames + metadata calls, each attempt throttled with p = 0.3: no throttle at all is implausible
        assert ex.throttled_calls >= 3
        before = ex.throttled_calls
        faults(throttle_rate=0, error_rate=0)
        ex.to_volume(case.datastore_id, case.image_set_id, rescale=False)
        assert ex.throttled_calls == before

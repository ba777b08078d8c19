"""The one frame-fetch path: a persistent thread pool that fetches, decodes and CRC32-verifies frames.

- Bounded: at most ``max_in_flight`` frames are submitted at once; each worker thread holds one request.
- Keep-alive: one botocore client (urllib3 pool of ``max_pool_connections``) shared by every worker.
- Retries: botocore retries each call (standard/adaptive mode); on top, a frame is retried with exponential
  backoff and jitter on the explicit ``RETRYABLE`` tuple (throttling, 5xx, connection errors, checksum
  mismatch, corrupt bytes), at most ``RetryPolicy.max_attempts`` times, each logged at debug.
- Deadline: a job that is not done by its deadline raises ExportDeadlineError naming the outstanding frames;
  queued work is cancelled, running attempts stop at their next step. Never a hang.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions as bce
import numpy as np

from .decoders import Codec, DecoderRegistry, FrameSpec, resolve_codec
from .decoders.jpeg import to_rgb
from .errors import (
    AHICredentialsError,
    AHIError,
    ExportDeadlineError,
    FrameChecksumError,
    FrameDecodeError,
    FrameError,
    FrameFetchError,
    FrameRef,
    UnsupportedFrameFormatError,
)

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestTimeout",
        "InternalServerException",
        "ServiceUnavailable",
        "InternalFailure",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "InvalidClientTokenId",
    }
)


class _RetryableClientError(Exception):
    """A throttling / 5xx ClientError, re-raised under a type the retry tuple can name."""


class _ChecksumMismatch(Exception):
    pass


class _CorruptFrame(Exception):
    pass


RETRYABLE: tuple[type[BaseException], ...] = (
    _RetryableClientError,
    bce.ConnectionError,  # Endpoint/ConnectTimeout/ReadTimeout/ConnectionClosed errors
    bce.HTTPClientError,
    bce.IncompleteReadError,
    bce.ResponseStreamingError,
    _ChecksumMismatch,
    _CorruptFrame,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Frame-level retries on top of botocore's: ``max_attempts`` tries, backoff ``base * 2**n`` capped at
    ``max_delay_s``, equal jitter (half fixed, half random). The retries of one frame thus span at least
    half the sum of the caps (defaults: 3.5-7.1 s), so a short outage of the endpoint (a restart, dropped
    connections) is ridden out instead of failing the export within a second (botocore's own backoff for
    connection errors and 5xx is only 50 ms * 2**n)."""

    max_attempts: int = 8
    base_delay_s: float = 0.1
    max_delay_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError(f"invalid retry policy {self}")

    def delay(self, attempt: int) -> float:
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return float(cap / 2 + random.uniform(0, cap / 2))


@dataclass(frozen=True)
class FrameTask:
    """One frame to fetch; ``sink(task, pixels)`` receives the verified array (shape/dtype of ``spec``)."""

    ref: FrameRef
    spec: FrameSpec
    checksum: int | None
    stored_syntax: str | None
    sink: Callable[[FrameTask, np.ndarray, Codec], None]


@dataclass
class JobStats:
    frames: int = 0
    attempts: int = 0
    retries: int = 0
    codecs: dict[str, int] = field(default_factory=dict)
    backends: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, codec: Codec, backend: str) -> None:
        with self._lock:
            self.frames += 1
            self.codecs[codec.value] = self.codecs.get(codec.value, 0) + 1
            self.backends[backend] = self.backends.get(backend, 0) + 1


class _Job:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.cancelled = threading.Event()
        self.stats = JobStats()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def _status(exc: bce.ClientError) -> tuple[int, str]:
    resp = exc.response or {}
    return int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0), str(
        resp.get("Error", {}).get("Code", "")
    )


class FrameFetcher:
    """Owns the persistent worker pool; thread-safe; reusable for any number of jobs until :meth:`close`."""

    def __init__(
        self,
        client: Any,
        decoders: DecoderRegistry,
        max_workers: int = 16,
        max_in_flight: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.client = client
        self.decoders = decoders
        self.max_workers = max_workers
        self.max_in_flight = max_in_flight or 2 * max_workers
        self.retry = retry or RetryPolicy()
        self._pool: cf.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> cf.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="ahi-frame")
            return self._pool

    def close(self, wait: bool = False) -> None:
        """Stop the pool: queued frames are cancelled; a request still in flight (e.g. after a deadline) ends
        on its own within the client's read timeout, so ``wait=False`` (default) never blocks on a hung
        server."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)

    # -- one job ---------------------------------------------------------------------------------------------
    def run(self, tasks: Iterable[FrameTask], deadline_s: float) -> JobStats:
        """Fetch every task (bounded in flight); the first frame error or the deadline ends the job."""
        job = _Job(time.monotonic() + deadline_s)
        pool = self._executor()
        pending: dict[cf.Future[None], FrameTask] = {}
        it = iter(tasks)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self.max_in_flight:
                    task = next(it, None)
                    if task is None:
                        exhausted = True
                        break
                    pending[pool.submit(self._run_task, task, job)] = task
                if not pending:
                    return job.stats
                remaining = job.remaining()
                if remaining <= 0:
                    raise self._deadline_error(pending.values(), deadline_s)
                done, _ = cf.wait(pending, timeout=remaining, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    pending.pop(fut)
                    fut.result()
        finally:
            job.cancelled.set()
            for fut in pending:
                fut.cancel()

    @staticmethod
    def _deadline_error(outstanding: Iterable[FrameTask], deadline_s: float) -> ExportDeadlineError:
        refs = [t.ref for t in outstanding]
        first = refs[0]
        shown = ", ".join(r.frame_id for r in refs[:5]) + (" ..." if len(refs) > 5 else "")
        return ExportDeadlineError(
            f"export of image set {first.image_set_id} (datastore {first.datastore_id}) exceeded its "
            f"deadline of {deadline_s:.1f} s with {len(refs)} frame(s) outstanding, e.g. {first.describe()}; "
            f"outstanding frame IDs: {shown}. Raise deadline_s or check the service's health."
        )

    def _run_task(self, task: FrameTask, job: _Job) -> None:
        policy = self.retry
        last: BaseException | None = None
        for attempt in range(1, policy.max_attempts + 1):
            if job.cancelled.is_set():
                return
            job.stats.attempts += 1  # approximate under concurrency; for logs only
            try:
                pixels, codec, backend = self._fetch_once(task)
            except RETRYABLE as exc:
                last = exc
                delay = policy.delay(attempt)
                log.debug(
                    "%s: attempt %d/%d failed (%s: %s); retry in %.3f s",
                    task.ref.frame_id,
                    attempt,
                    policy.max_attempts,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                job.stats.retries += 1
                if attempt == policy.max_attempts:
                    break
                if job.remaining() <= delay:
                    raise ExportDeadlineError(
                        f"{task.ref.describe()}: deadline reached while retrying (attempt {attempt}, last "
                        f"error {type(exc).__name__}: {exc})"
                    ) from exc
                if job.cancelled.wait(delay):
                    return
                continue
            task.sink(task, pixels, codec)
            job.stats.count(codec, backend)
            return
        raise self._final_error(task, last, policy.max_attempts)

    @staticmethod
    def _final_error(task: FrameTask, last: BaseException | None, attempts: int) -> FrameError:
        cause = last.__cause__ if isinstance(last, _RetryableClientError) and last.__cause__ else last
        if isinstance(last, _ChecksumMismatch):
            err: FrameError = FrameChecksumError(
                f"{task.ref.describe()}: {last} on all {attempts} attempts; the stored frame or its "
                f"metadata checksum"
                " is corrupt",
                task.ref,
            )
        elif isinstance(last, _CorruptFrame):
            err = FrameDecodeError(f"{task.ref.describe()}: {last} on all {attempts} attempts", task.ref)
        else:
            err = FrameFetchError(
                f"{task.ref.describe()}: GetImageFrame failed {attempts} times; last error "
                f"{type(cause).__name__}: {cause}",
                task.ref,
            )
        err.__cause__ = cause
        return err

    def _fetch_once(self, task: FrameTask) -> tuple[np.ndarray, Codec, str]:
        ref = task.ref
        data, content_type = self._get_frame_bytes(ref)
        try:
            codec = resolve_codec(content_type, task.stored_syntax, data)
        except ValueError as exc:
            raise UnsupportedFrameFormatError(f"{ref.describe()}: {exc}", ref) from exc
        try:
            backend = self.decoders.select(codec)
        except LookupError as exc:
            raise UnsupportedFrameFormatError(f"{ref.describe()}: {exc}", ref) from exc
        try:
            pixels = self.decoders.decode(codec, data, task.spec)
        except AHIError:
            raise
        except Exception as exc:  # decoder libraries raise their own types; treated as corrupt bytes, retried
            raise _CorruptFrame(
                f"{backend.name} could not decode {len(data)} {codec.value} bytes: {exc}"
            ) from exc
        if task.checksum is not None:
            crc = zlib.crc32(np.ascontiguousarray(pixels).tobytes()) & 0xFFFFFFFF
            if crc != task.checksum:
                raise _ChecksumMismatch(f"CRC32 of decoded pixels {crc} != metadata checksum {task.checksum}")
        if codec is Codec.JPEG and task.spec.is_ybr:
            pixels = to_rgb(pixels, task.spec)
        return pixels, codec, backend.name

    def _get_frame_bytes(self, ref: FrameRef) -> tuple[bytes, str | None]:
        try:
            resp = self.client.get_image_frame(
                datastoreId=ref.datastore_id,
                imageSetId=ref.image_set_id,
                imageFrameInformation={"imageFrameId": ref.frame_id},
            )
            body = resp["imageFrameBlob"]
            try:
                data = body.read()
            finally:
                body.close()
        except bce.ClientError as exc:
            status, code = _status(exc)
            if status in RETRYABLE_STATUS or code in RETRYABLE_CODES:
                raise _RetryableClientError(f"{code or status}: {exc}") from exc
            if code in CREDENTIAL_CODES or status == 403:
                raise AHICredentialsError(f"{ref.describe()}: access denied ({code}): {exc}") from exc
            err = FrameFetchError(
                f"{ref.describe()}: GetImageFrame failed ({code}, HTTP {status}): {exc}", ref
            )
            err.http_status = 404 if status == 404 else 502
            raise err from exc
        except bce.NoCredentialsError as exc:
            raise AHICredentialsError(
                f"no AWS credentials found for {ref.describe()}; configure the default chain "
                "(env, profile, role) or pass a session/client"
            ) from exc
        return data, resp.get("contentType")

"""The one frame-fetch path: a persistent thread pool that fetches, decodes and CRC32-verifies frames.

- Bounded: at most ``max_in_flight`` frames are submitted at once; each worker thread holds one request.
- Transport: :mod:`ahi_connector.transport` (the lean urllib3 + SigV4 transport when the client allows it,
  else the botocore client itself); one keep-alive pool shared by every worker.
- Throttling: an :class:`AdaptiveLimiter` shared by the workers halves the allowed concurrency on every
  throttling answer (429 / ThrottlingException, at most once per 50 ms), grows it again by one request per
  window of successes (AIMD), and paces requests so that no second ever sees more than ``max_tps`` (default
  1000, AHI's default GetImageFrame quota) requests.
- Retries: a frame is retried with exponential backoff and jitter on the explicit ``RETRYABLE`` tuple
  (throttling, 5xx, connection errors, read timeouts, checksum mismatch, corrupt bytes), at most
  ``RetryPolicy.max_attempts`` times and within ``RetryPolicy.frame_budget_s``, each logged at debug
  (the botocore transport adds botocore's own per-call retries underneath). A frame that no decoder of the
  fallback chain can decode (or verify) is fetched once more; when the same bytes come back the failure is
  deterministic and is raised at once instead of being retried.
- Hung frames: each attempt of the lean transport waits at most ``frame_read_timeout_s`` (default 10 s) for
  a byte; a frame that has not answered within its budget (default 30 s, i.e. three silent attempts) fails
  the job with FrameFetchError naming it. A frame that stalls once and then answers costs one read timeout.
- Deadline: a job that is not done by its deadline raises ExportDeadlineError naming the outstanding frames;
  queued work is cancelled, running attempts stop at their next step. Never a hang.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions as bce
import numpy as np

from .decoders import Codec, DecoderRegistry, FrameSpec, resolve_codec
from .decoders.base import crc32
from .decoders.jpeg import to_rgb
from .decoders.registry import FrameDecodeFailure
from .errors import (
    AHICredentialsError,
    ExportDeadlineError,
    FrameChecksumError,
    FrameDecodeError,
    FrameError,
    FrameFetchError,
    FrameRef,
    UnsupportedFrameFormatError,
)
from .transport import DEFAULT_FRAME_READ_TIMEOUT_S, FrameTransport, select_transport

log = logging.getLogger(__name__)


RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException"})
RETRYABLE_CODES = THROTTLING_CODES | frozenset(
    {
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

    def __init__(self, message: str, *, throttled: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled


class _Cancelled(Exception):
    """The job ended (deadline, another frame's error) while this attempt waited for a slot."""


class _ChecksumMismatch(Exception):
    """Decoded pixels do not match the metadata checksum; ``digest`` identifies the bytes."""

    def __init__(self, message: str, digest: tuple[int, int]) -> None:
        super().__init__(message)
        self.digest = digest


class _CorruptFrame(Exception):
    """No decoder of the chain decoded the bytes (or reproduced the checksum); ``digest`` identifies them."""

    def __init__(self, message: str, digest: tuple[int, int]) -> None:
        super().__init__(message)
        self.digest = digest


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
    """Frame-level retries: ``max_attempts`` tries, backoff ``base * 2**n`` capped at ``max_delay_s``, equal
    jitter (half fixed, half random). The retries of one frame thus span at least half the sum of the caps
    (defaults: 3.5-7.1 s), so a short outage of the endpoint (a restart, dropped connections) is ridden out
    instead of failing the export within a second (botocore's own backoff for connection errors and 5xx is
    only 50 ms * 2**n).

    ``frame_budget_s`` bounds the time one frame may take over all its attempts: no new attempt starts once
    it is spent. With the lean transport's per-attempt read timeout (10 s by default) a frame that never
    answers fails after three attempts, about 30 s, well inside the export deadline."""

    max_attempts: int = 8
    base_delay_s: float = 0.1
    max_delay_s: float = 2.0
    frame_budget_s: float = 30.0

    def __post_init__(self) -> None:
        if (
            self.max_attempts < 1
            or self.base_delay_s < 0
            or self.max_delay_s < self.base_delay_s
            or self.frame_budget_s <= 0
        ):
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


class AdaptiveLimiter:
    """AIMD concurrency and a request-rate ceiling shared by the frame workers (see the module doc).

    ``acquire()`` blocks until a request may start: fewer than ``limit`` requests in flight and the pacing
    slot reached (slots are ``1 / max_tps`` apart, so any one-second window holds at most ``max_tps`` + 1
    requests). ``release(throttled)`` ends a request: a throttling answer halves ``limit`` (not below 1, at
    most once per ``DECREASE_GAP_S``), a success raises it by ``1 / limit`` (one request per window)."""

    DECREASE_GAP_S = 0.05

    def __init__(self, max_concurrency: int, max_tps: float | None = 1000.0) -> None:
        if max_concurrency < 1 or (max_tps is not None and max_tps <= 0):
            raise ValueError(f"invalid limits: max_concurrency={max_concurrency}, max_tps={max_tps}")
        self.max_concurrency = max_concurrency
        self.max_tps = max_tps
        self.limit = float(max_concurrency)
        self.lowest = self.limit
        self.throttled = 0
        self._interval = 1.0 / max_tps if max_tps else 0.0
        self._next_slot = 0.0
        self._last_decrease = -1.0
        self._in_flight = 0
        self._cond = threading.Condition()

    def acquire(self, cancelled: threading.Event) -> bool:
        """Wait for a slot; False when ``cancelled`` was set meanwhile (nothing acquired)."""
        with self._cond:
            while self._in_flight >= max(1, int(self.limit)):
                if cancelled.is_set():
                    return False
                self._cond.wait(0.05)
            self._in_flight += 1
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
        if slot > now:
            time.sleep(slot - now)
        return True

    def release(self, throttled: bool) -> None:
        with self._cond:
            self._in_flight -= 1
            now = time.monotonic()
            if throttled:
                self.throttled += 1
                if now - self._last_decrease >= self.DECREASE_GAP_S:
                    self.limit = max(1.0, self.limit / 2)
                    self.lowest = min(self.lowest, self.limit)
                    self._last_decrease = now
            else:
                self.limit = min(float(self.max_concurrency), self.limit + 1.0 / self.limit)
            self._cond.notify()


@dataclass
class JobStats:
    frames: int = 0
    attempts: int = 0
    retries: int = 0
    transport: str = ""
    codecs: dict[str, int] = field(default_factory=dict)
    backends: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, codec: Codec, backend: str) -> None:
        with self._lock:
            self.frames += 1
            self.codecs[codec.value] = self.codecs.get(codec.value, 0) + 1
            self.backends[backend] = self.backends.get(backend, 0) + 1


class _Job:
    def __init__(self, deadline: float, transport: str) -> None:
        self.deadline = deadline
        self.cancelled = threading.Event()
        self.stats = JobStats(transport=transport)

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
        *,
        transport: str | FrameTransport = "auto",
        max_tps: float | None = 1000.0,
        frame_read_timeout_s: float = DEFAULT_FRAME_READ_TIMEOUT_S,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.client = client
        self.decoders = decoders
        self.max_workers = max_workers
        self.max_in_flight = max_in_flight or 2 * max_workers
        self.retry = retry or RetryPolicy()
        self.transport: FrameTransport = (
            select_transport(
                client, transport, max_connections=max_workers, read_timeout_s=frame_read_timeout_s
            )
            if isinstance(transport, str)
            else transport
        )
        self.limiter = AdaptiveLimiter(max_workers, max_tps)
        self._pool: cf.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> cf.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="ahi-frame")
            return self._pool

    def close(self, wait: bool = False) -> None:
        """Stop the pool: queued frames are cancelled; a request still in flight (e.g. after a deadline) ends
        on its own within the read timeout, so ``wait=False`` (default) never blocks on a hung server. The
        transport's connections stay usable (a later job restarts the workers)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)

    # -- one job ---------------------------------------------------------------------------------------------
    def run(self, tasks: Iterable[FrameTask], deadline_s: float) -> JobStats:
        """Fetch every task (bounded in flight); the first frame error or the deadline ends the job."""
        job = _Job(time.monotonic() + deadline_s, self.transport.name)
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
        """Fetch one frame: throttled answers back off without counting as failed attempts (AIMD handles
        them); other retryable failures count towards ``max_attempts``; all of them within the frame
        budget and the job deadline."""
        policy = self.retry
        last: BaseException | None = None
        started = time.monotonic()
        failures = tries = 0
        failed_digest: tuple[int, int] | None = None
        while failures < policy.max_attempts:
            if job.cancelled.is_set():
                return
            job.stats.attempts += 1  # approximate under concurrency; for logs only
            try:
                pixels, codec, backend = self._fetch_once(task, job)
            except _Cancelled:
                return
            except RETRYABLE as exc:
                last = exc
                tries += 1
                digest = getattr(exc, "digest", None)
                if digest is not None and digest == failed_digest:
                    # the same bytes failed again: a deterministic decode/verify failure, not a transfer fault
                    raise self._final_error(task, last, tries, deterministic=True) from None
                failed_digest = digest if digest is not None else failed_digest
                if not (isinstance(exc, _RetryableClientError) and exc.throttled):
                    failures += 1
                delay = policy.delay(min(tries, 16))
                log.debug(
                    "%s: attempt %d (%d/%d failed) failed (%s: %s); retry in %.3f s",
                    task.ref.frame_id,
                    tries,
                    failures,
                    policy.max_attempts,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                job.stats.retries += 1
                if failures >= policy.max_attempts:
                    break
                spent = time.monotonic() - started
                if spent + delay >= policy.frame_budget_s:
                    raise self._final_error(
                        task, exc, tries, budget=(self.retry.frame_budget_s, spent)
                    ) from exc
                if job.remaining() <= delay:
                    raise ExportDeadlineError(
                        f"{task.ref.describe()}: deadline reached while retrying (attempt {tries}, last "
                        f"error {type(exc).__name__}: {exc})"
                    ) from exc
                if job.cancelled.wait(delay):
                    return
                continue
            task.sink(task, pixels, codec)
            job.stats.count(codec, backend)
            return
        raise self._final_error(task, last, failures)

    def _final_error(
        self,
        task: FrameTask,
        last: BaseException | None,
        attempts: int,
        budget: tuple[float, float] | None = None,
        deterministic: bool = False,
    ) -> FrameError:
        """The error of a frame that exhausted its attempts, or (``budget`` = (budget_s, spent_s)) its
        per-frame time budget, or (``deterministic``) whose same bytes failed to decode twice."""
        cause = last.__cause__ if isinstance(last, _RetryableClientError) and last.__cause__ else last
        tries = (
            f"on {attempts} attempts (the same bytes were served each time; not retried further)"
            if deterministic
            else f"on all {attempts} attempts"
        )
        if budget is not None and not isinstance(last, (_ChecksumMismatch, _CorruptFrame)):
            err: FrameError = FrameFetchError(
                f"{task.ref.describe()}: no answer within the per-frame budget of {budget[0]:g} s "
                f"({attempts} attempts in {budget[1]:.1f} s, each waiting at most "
                f"{self.transport.read_timeout_s:g} s for data); last error {type(cause).__name__}: {cause}",
                task.ref,
            )
        elif isinstance(last, _ChecksumMismatch):
            err = FrameChecksumError(
                f"{task.ref.describe()}: {last} {tries}; the stored frame or its metadata checksum is "
                "corrupt",
                task.ref,
            )
        elif isinstance(last, _CorruptFrame):
            # 502 even when deterministic: the service accepted the frame at import, so bytes it serves that
            # no decoder reads are an upstream fault, not the caller's data
            err = FrameDecodeError(f"{task.ref.describe()}: (7FE0,0010) Pixel Data: {last} {tries}", task.ref)
        else:
            err = FrameFetchError(
                f"{task.ref.describe()}: GetImageFrame failed {attempts} times; last error "
                f"{type(cause).__name__}: {cause}",
                task.ref,
            )
        err.__cause__ = cause
        return err

    def _fetch_once(self, task: FrameTask, job: _Job) -> tuple[np.ndarray, Codec, str]:
        ref = task.ref
        if not self.limiter.acquire(job.cancelled):
            raise _Cancelled()
        throttled = False
        try:
            data, content_type = self._get_frame_bytes(ref)
        except _RetryableClientError as exc:
            throttled = exc.throttled
            raise
        finally:
            self.limiter.release(throttled)
        try:
            codec = resolve_codec(content_type, task.stored_syntax, data)
        except ValueError as exc:
            raise UnsupportedFrameFormatError(f"{ref.describe()}: {exc}", ref) from exc
        try:
            pixels, backend = self.decoders.decode_frame(codec, data, task.spec, task.checksum)
        except LookupError as exc:
            raise UnsupportedFrameFormatError(f"{ref.describe()}: {exc}", ref) from exc
        except FrameDecodeFailure as exc:  # every backend failed: corrupt in transit (retried) or for good
            digest = (crc32(data), len(data))
            if exc.checksum_only:
                raise _ChecksumMismatch(f"{len(data)} {codec.value} bytes: {exc}", digest) from exc
            raise _CorruptFrame(f"could not decode {len(data)} {codec.value} bytes: {exc}", digest) from exc
        if codec is Codec.JPEG and task.spec.is_ybr:
            pixels = to_rgb(pixels, task.spec)
        return pixels, codec, backend

    def _get_frame_bytes(self, ref: FrameRef) -> tuple[bytes, str | None]:
        try:
            return self.transport.get_frame(ref)
        except bce.ClientError as exc:
            status, code = _status(exc)
            if status in RETRYABLE_STATUS or code in RETRYABLE_CODES:
                raise _RetryableClientError(
                    f"{code or status}: {exc}", throttled=status == 429 or code in THROTTLING_CODES
                ) from exc
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

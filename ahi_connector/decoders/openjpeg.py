"""HTJ2K / JPEG 2000 via pylibjpeg-openjpeg (``openjpeg.decode``) in a persistent process pool.

``openjpeg.decode`` holds the GIL, so it runs in worker processes (``spawn`` context: safe next to botocore's
threads). The pool starts on first use, is reused by every later call and is shut down by :meth:`close` (and
at interpreter exit). An owner that never gets to either (SIGKILL, the OOM killer, a model server replacing a
dead worker) must not leave its decoders behind: each pool process watches its parent and exits as soon as it
has been re-parented. The watch is a poll of ``getppid`` rather than ``PR_SET_PDEATHSIG``, because the pool
spawns processes from whichever thread submits, and a death signal follows the *thread* that forked.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import logging
import multiprocessing
import os
import threading
import time
import weakref

import numpy as np

from .base import Codec, DecoderBackend, FrameSpec

log = logging.getLogger(__name__)
_LIVE: weakref.WeakSet[OpenJPEGBackend] = weakref.WeakSet()
OWNER_POLL_S = 0.5


def _exit_when_orphaned(owner_pid: int) -> None:
    """Pool initializer: a daemon thread ends this process once ``owner_pid`` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == owner_pid:
            time.sleep(OWNER_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


def _decode_in_worker(data: bytes) -> np.ndarray:
    import openjpeg

    return openjpeg.decode(data)


def _close_all() -> None:
    for backend in list(_LIVE):
        backend.close()


atexit.register(_close_all)


class OpenJPEGBackend(DecoderBackend):
    name = "openjpeg"
    codecs = frozenset({Codec.HTJ2K, Codec.J2K})
    requires = "pylibjpeg-openjpeg (pip install pylibjpeg-openjpeg)"

    def __init__(self, processes: int | None = None) -> None:
        self.processes = processes or max(1, min(4, os.cpu_count() or 1))
        self._pool: cf.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        _LIVE.add(self)

    def unavailable_reason(self) -> str | None:
        try:
            import openjpeg  # noqa: F401
        except ImportError as exc:
            return f"pylibjpeg-openjpeg is not installed ({exc}); needs {self.requires}"
        return None

    def _get_pool(self) -> cf.ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                log.debug("starting openjpeg decoder pool with %d processes", self.processes)
                self._pool = cf.ProcessPoolExecutor(
                    max_workers=self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_when_orphaned,
                    initargs=(os.getpid(),),
                )
            return self._pool

    def _decode(self, data: bytes, spec: FrameSpec) -> np.ndarray:
        pool = self._get_pool()
        try:
            return pool.submit(_decode_in_worker, bytes(data)).result()
        except cf.process.BrokenProcessPool:
            log.debug("openjpeg decoder pool broke; restarting it")
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    def worker_pids(self) -> list[int]:
        """PIDs of the live worker processes (for leak checks)."""
        pool = self._pool
        if pool is None:
            return []
        return [p.pid for p in (getattr(pool, "_processes", None) or {}).values() if p.is_alive()]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            log.debug("shutting down openjpeg decoder pool")
            pool.shutdown(wait=True, cancel_futures=True)

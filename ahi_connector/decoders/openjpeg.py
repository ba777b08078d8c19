"""HTJ2K / JPEG 2000 via pylibjpeg-openjpeg (``openjpeg.decode``) in a persistent process pool.

``openjpeg.decode`` holds the GIL, so it runs in worker processes (``spawn`` context: safe next to botocore's
threads). The pool starts on first use, is reused by every later call and is shut down by :meth:`close` (and
at interpreter exit), so no worker outlives its owner.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import logging
import multiprocessing
import os
import threading
import weakref

import numpy as np

from .base import Codec, DecoderBackend, FrameSpec

log = logging.getLogger(__name__)
_LIVE: weakref.WeakSet[OpenJPEGBackend] = weakref.WeakSet()


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
                    max_workers=self.processes, mp_context=multiprocessing.get_context("spawn")
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

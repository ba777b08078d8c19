"""Per-run facts shared by the app's operators: stage timings and where the input came from.

One :class:`RunRecord` is made for each run of the application; the operators write into it and the report
operator reads it. The holoscan scheduler runs the operators of this app one at a time (greedy scheduler), so
the stage timings are wall-clock times that add up to the run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGE_METADATA = "metadata"
STAGE_FETCH = "fetch_decode"
STAGE_SELECT = "select"
STAGE_VOLUME = "volume"
STAGE_INFERENCE = "inference"
STAGE_MASK = "mask"
STAGE_SEG_WRITE = "seg_write"
STAGE_STL = "stl"
STAGE_PREVIEW = "preview"
STAGE_REPORT = "report"
STAGES = (
    STAGE_METADATA,
    STAGE_FETCH,
    STAGE_SELECT,
    STAGE_VOLUME,
    STAGE_INFERENCE,
    STAGE_MASK,
    STAGE_SEG_WRITE,
    STAGE_STL,
    STAGE_PREVIEW,
    STAGE_REPORT,
)


@dataclass
class RunRecord:
    """Stage timings (seconds), the provenance of the input of one run and, for AHI input, what fetching it
    took: frames fetched, frame-level retries, throttled API responses (botocore's retries included)."""

    timings: dict[str, float] = field(default_factory=dict)
    datastore_id: str | None = None
    image_set_ids: list[str] = field(default_factory=list)
    frames_fetched: int = 0
    frame_retries: int = 0
    throttles: int = 0
    #: Set by the report operator at the end of a successful run: the report and the files it names.
    report: dict[str, Any] | None = None
    seg_path: Path | None = None
    stl_path: Path | None = None
    preview_path: Path | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to stage ``name`` (also when the body raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    @contextmanager
    def fetching(self, exporter: Any) -> Iterator[None]:
        """Count what one connector job in the ``with`` body took (``exporter.last_stats`` after it, and the
        exporter's throttled responses during it) into this run's fetch counts."""
        throttled_before, stats_before = exporter.throttled_calls, exporter.last_stats
        try:
            yield
        finally:
            self.throttles += exporter.throttled_calls - throttled_before
            stats = exporter.last_stats
            if stats is not None and stats is not stats_before:
                self.frames_fetched += stats.frames
                self.frame_retries += stats.retries

    def fetch_summary(self) -> dict[str, int] | None:
        """The report's ``fetch`` object for AHI input; None for a DICOM folder."""
        if self.datastore_id is None:
            return None
        return {
            "frames": self.frames_fetched,
            "frameRetries": self.frame_retries,
            "throttles": self.throttles,
        }

    def timings_ordered(self) -> dict[str, float]:
        """Timings in pipeline order, rounded to milliseconds."""
        known = [s for s in STAGES if s in self.timings]
        other = sorted(s for s in self.timings if s not in STAGES)
        return {s: round(self.timings[s], 3) for s in known + other}

"""Fault injection for tests and reliability drills (never on by default).

Random faults: ``throttle_rate`` (ThrottlingException 429), ``error_rate`` (InternalServerException 500),
``latency_ms`` (added to every AWS API request), ``corrupt_rate`` (GetImageFrame bytes garbled).
Targeted faults by image frame ID: ``fail_frames`` (500), ``hang_frames`` (no answer for ``hang_seconds``),
``corrupt_frames`` (garbled bytes). ``throttle_operations`` limits throttling/errors to some operations
(empty = all). Settings come from CLI flags / environment at start and can be changed at runtime through
``PUT /_local/faults`` (JSON with the same field names).

Randomness (relied on by seeded reliability tests; keep it stable): one ``random.Random(seed)`` per settings
object (re-created on every update); each request in scope draws once per non-zero rate, throttle first, then
error (a throttled request draws no error roll); a GetImageFrame not targeted by ID then draws once for
``corrupt_rate``. A hung frame is logged as ``hanging GetImageFrame <ID> for <S> s`` and counted: ``GET
/_local/faults`` answers the settings plus ``hangsStarted`` (frame ID -> requests that began to hang), so a
test can wait for the server's own record of a hang rather than racing it.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Mapping
from typing import Any

from .errors import InternalError, ThrottlingError, ValidationError


@dataclasses.dataclass(frozen=True)
class FaultSettings:
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    latency_ms: float = 0.0
    corrupt_rate: float = 0.0
    fail_frames: frozenset[str] = frozenset()
    hang_frames: frozenset[str] = frozenset()
    corrupt_frames: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()
    hang_seconds: float = 300.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("throttle_rate", "error_rate", "corrupt_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault setting {name}={value} must be between 0 and 1")
        if self.latency_ms < 0 or self.hang_seconds < 0:
            raise ValueError("fault settings latency_ms and hang_seconds must be >= 0")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: FaultSettings | None = None) -> FaultSettings:
        """Build settings from JSON-like values (unknown keys rejected); unspecified fields keep ``base``."""
        base = base or cls()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValidationError(f"unknown fault settings {unknown}; known: {sorted(fields)}")
        changes: dict[str, Any] = {}
        try:
            for key, value in values.items():
                if key in ("fail_frames", "hang_frames", "corrupt_frames", "operations"):
                    changes[key] = frozenset(str(v) for v in value)
                elif key == "seed":
                    changes[key] = None if value is None else int(value)
                else:
                    changes[key] = float(value)
            return dataclasses.replace(base, **changes)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"invalid fault settings {dict(values)!r}: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, frozenset):
                out[key] = sorted(value)
        return out


class FaultInjector:
    """Decides, per request, which fault (if any) to inject. Thread-safe; settings can change at runtime."""

    def __init__(self, settings: FaultSettings) -> None:
        self._lock = threading.Lock()
        self._settings = settings
        self._rng = random.Random(settings.seed)
        self._hangs: dict[str, int] = {}

    def record_hang(self, frame_id: str) -> None:
        with self._lock:
            self._hangs[frame_id] = self._hangs.get(frame_id, 0) + 1

    def status(self) -> dict[str, Any]:
        """The settings (JSON) and ``hangsStarted``."""
        with self._lock:
            hangs = dict(self._hangs)
        return {**self._settings.to_json(), "hangsStarted": hangs}

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    def update(self, settings: FaultSettings) -> None:
        with self._lock:
            self._settings = settings
            self._rng = random.Random(settings.seed)

    def _roll(self, rate: float) -> bool:
        if rate <= 0.0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def latency_s(self) -> float:
        return self._settings.latency_ms / 1000.0

    def check_request(self, operation: str) -> None:
        """Raise ThrottlingException / InternalServerException at the configured rates."""
        s = self._settings
        if s.operations and operation not in s.operations:
            return
        if self._roll(s.throttle_rate):
            raise ThrottlingError(f"Rate exceeded for {operation} (ahi-local fault injection: throttle_rate)")
        if self._roll(s.error_rate):
            raise InternalError(f"{operation} failed (ahi-local fault injection: error_rate)")

    def frame_fault(self, frame_id: str) -> str | None:
        """``"fail"``, ``"hang"``, ``"corrupt"`` or None for this image frame."""
        s = self._settings
        if frame_id in s.fail_frames:
            return "fail"
        if frame_id in s.hang_frames:
            return "hang"
        if frame_id in s.corrupt_frames or self._roll(s.corrupt_rate):
            return "corrupt"
        return None


def corrupt_bytes(data: bytes) -> bytes:
    """Garble a frame deterministically: keep the first 16 bytes (so it still looks like the codec's stream),
    invert the rest and drop the last quarter."""
    keep = data[:16]
    rest = bytes(b ^ 0xFF for b in data[16 : max(16, len(data) * 3 // 4)])
    return keep + rest

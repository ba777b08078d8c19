"""What every decoder backend implements, and how a frame's codec is identified."""

from __future__ import annotations

import enum
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def _crc32_function() -> Callable[[Any], int]:
    """CRC-32 (the checksum AHI stores) of a buffer: libdeflate's from imagecodecs (~15x zlib's on 512²
    frames, 0.014 vs 0.2 ms), else zlib's. Same polynomial, same values."""
    try:
        from imagecodecs import deflate_crc32
    except ImportError:  # imagecodecs without libdeflate
        return zlib.crc32
    probe = b"ahi-connector crc probe"
    return deflate_crc32 if deflate_crc32(probe) == zlib.crc32(probe) else zlib.crc32


crc32 = _crc32_function()


class Codec(str, enum.Enum):
    """Bitstream formats GetImageFrame can return."""

    HTJ2K = "htj2k"  # image/jph, image/jphc (High-Throughput JPEG 2000)
    J2K = "j2k"  # image/j2c (JPEG 2000 part 1)
    JPEG = "jpeg"  # image/jpeg (baseline / extended, 8 or 12 bit)
    NATIVE = "native"  # application/octet-stream with a native stored transfer syntax


@dataclass(frozen=True)
class FrameSpec:
    """Pixel layout of one frame, from the instance's Image Pixel module."""

    rows: int
    columns: int
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0  # 0 unsigned, 1 two's complement
    photometric: str = "MONOCHROME2"
    floating: bool = False  # Float (32-bit) / Double Float (64-bit) Pixel Data

    @property
    def is_ybr(self) -> bool:
        return self.samples_per_pixel == 3 and self.photometric.startswith("YBR")

    @property
    def dtype(self) -> np.dtype:
        """Sample dtype of a decoded frame; 1-bit frames are served and decoded one sample per byte."""
        if self.bits_allocated == 1:
            return np.dtype("u1")
        if self.floating:
            return np.dtype(f"<f{self.bits_allocated // 8}")
        if self.bits_allocated not in (8, 16, 32):
            raise ValueError(
                f"(0028,0100) Bits Allocated {self.bits_allocated} is not supported (1, 8, 16 or 32)"
            )
        kind = "i" if self.pixel_representation == 1 else "u"
        return np.dtype(f"<{kind}{self.bits_allocated // 8}")

    @property
    def shape(self) -> tuple[int, ...]:
        if self.samples_per_pixel == 1:
            return (self.rows, self.columns)
        return (self.rows, self.columns, self.samples_per_pixel)

    @property
    def nbytes(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel * self.dtype.itemsize


class DecoderBackend:
    """One decoding library. Subclasses set ``name``/``codecs`` and implement ``_decode``.

    ``unavailable_reason()`` returns ``None`` when usable, else why not (e.g. missing package). ``decode()``
    returns a C-contiguous array of ``spec.shape`` (samples interleaved, i.e. planar configuration 0).
    """

    name: str = "?"
    codecs: frozenset[Codec] = frozenset()
    requires: str = ""

    def unavailable_reason(self) -> str | None:
        return None

    def decode(self, data: bytes, spec: FrameSpec) -> np.ndarray:
        return self._decode(data, spec)

    def _decode(self, data: bytes, spec: FrameSpec) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release pools/processes; the backend may be used again afterwards (it restarts lazily)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def normalize(decoded: np.ndarray, spec: FrameSpec) -> np.ndarray:
    """Bring a decoder's output to ``spec.shape`` and ``spec.dtype`` (signedness and Bits Allocated honoured).

    Same-width integers are reinterpreted (identical bytes); narrower output (e.g. 8-bit data with Bits
    Allocated 16) is widened. Raises ValueError naming the mismatch otherwise.
    """
    arr = np.asarray(decoded)
    want = spec.shape
    if arr.shape != want:
        if spec.samples_per_pixel > 1 and arr.shape == (spec.samples_per_pixel, spec.rows, spec.columns):
            arr = np.moveaxis(arr, 0, -1)
        elif arr.size == spec.rows * spec.columns * spec.samples_per_pixel:
            arr = arr.reshape(want)
        else:
            raise ValueError(f"decoded frame has shape {arr.shape}, the metadata says {want}")
    dtype = spec.dtype
    if arr.dtype != dtype:
        if arr.dtype.kind == "f" or dtype.kind == "f":
            if arr.dtype.kind != dtype.kind or arr.dtype.itemsize != dtype.itemsize:
                raise ValueError(f"decoded frame has dtype {arr.dtype}, expected {dtype}")
            arr = arr.astype(dtype, copy=False)
        elif arr.dtype.kind not in "iub":
            raise ValueError(f"decoded frame has dtype {arr.dtype}, expected integer {dtype}")
        if arr.dtype.itemsize == dtype.itemsize:
            arr = arr.view(dtype)
        elif arr.dtype.itemsize < dtype.itemsize:
            arr = arr.astype(dtype)
        else:
            raise ValueError(
                f"decoded frame has {arr.dtype.itemsize * 8}-bit samples but (0028,0100) Bits Allocated is "
                f"{spec.bits_allocated}"
            )
    return np.ascontiguousarray(arr)

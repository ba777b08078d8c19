"""Native (uncompressed, little endian) frames: the bytes are the pixels."""

from __future__ import annotations

import numpy as np

from .base import Codec, DecoderBackend, FrameSpec


class NativeBackend(DecoderBackend):
    name = "native"
    codecs = frozenset({Codec.NATIVE})

    def _decode(self, data: bytes, spec: FrameSpec) -> np.ndarray:
        if len(data) < spec.nbytes:
            raise ValueError(f"native frame has {len(data)} bytes, expected {spec.nbytes} for {spec}")
        return np.frombuffer(data, dtype=spec.dtype, count=spec.nbytes // spec.dtype.itemsize).reshape(
            spec.shape
        )

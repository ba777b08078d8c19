"""JPEG 2000 and HTJ2K via the OpenJPEG library bundled in imagecodecs (``jpeg2k_decode``), GIL-free
threads."""

from __future__ import annotations

import numpy as np

from .base import Codec, DecoderBackend, FrameSpec


class Jpeg2kBackend(DecoderBackend):
    name = "jpeg2k"
    codecs = frozenset({Codec.J2K, Codec.HTJ2K})
    requires = "imagecodecs with OpenJPEG (pip install imagecodecs)"

    def unavailable_reason(self) -> str | None:
        try:
            import imagecodecs
        except ImportError as exc:
            return f"imagecodecs is not installed ({exc}); needs {self.requires}"
        if not getattr(getattr(imagecodecs, "JPEG2K", None), "available", False):
            return "this imagecodecs build has no JPEG2K (OpenJPEG) codec"
        return None

    def _decode(self, data: bytes, spec: FrameSpec) -> np.ndarray:
        import imagecodecs

        return imagecodecs.jpeg2k_decode(data)

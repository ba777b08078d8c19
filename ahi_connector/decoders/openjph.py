"""HTJ2K via OpenJPH (imagecodecs ``htj2k_decode``); releases the GIL, so it scales in plain threads."""

from __future__ import annotations

import numpy as np

from .base import Codec, DecoderBackend, FrameSpec


class OpenJPHBackend(DecoderBackend):
    name = "openjph"
    codecs = frozenset({Codec.HTJ2K})
    requires = "imagecodecs with OpenJPH (pip install imagecodecs)"

    def unavailable_reason(self) -> str | None:
        try:
            import imagecodecs
        except ImportError as exc:
            return f"imagecodecs is not installed ({exc}); needs {self.requires}"
        if not getattr(getattr(imagecodecs, "HTJ2K", None), "available", False):
            return "this imagecodecs build has no HTJ2K (OpenJPH) codec"
        return None

    def _decode(self, data: bytes, spec: FrameSpec) -> np.ndarray:
        import imagecodecs

        return imagecodecs.htj2k_decode(data)

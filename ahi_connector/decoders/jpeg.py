"""JPEG baseline / extended (8 and 12 bit) via libjpeg-turbo in imagecodecs (``jpeg8_decode``).

Colour frames stored as YBR_* are returned as decoded YCbCr (no colour transform), exactly the bytes the frame
checksum covers; :func:`to_rgb` converts them afterwards (DICOMize then writes Photometric Interpretation
RGB).
"""

from __future__ import annotations

import numpy as np

from .base import Codec, DecoderBackend, FrameSpec


class JpegBackend(DecoderBackend):
    name = "libjpeg-turbo"
    codecs = frozenset({Codec.JPEG})
    requires = "imagecodecs with libjpeg-turbo >= 3 (pip install imagecodecs)"

    def unavailable_reason(self) -> str | None:
        try:
            import imagecodecs
        except ImportError as exc:
            return f"imagecodecs is not installed ({exc}); needs {self.requires}"
        if not getattr(getattr(imagecodecs, "JPEG8", None), "available", False):
            return "this imagecodecs build has no JPEG8 (libjpeg-turbo) codec"
        return None

    def _decode(self, data: bytes, spec: FrameSpec) -> np.ndarray:
        import imagecodecs

        if spec.is_ybr:
            return imagecodecs.jpeg8_decode(data, colorspace="YCBCR", outcolorspace="YCBCR")
        return imagecodecs.jpeg8_decode(data)


def to_rgb(pixels: np.ndarray, spec: FrameSpec) -> np.ndarray:
    """YBR_FULL(_422) samples (upsampled, interleaved) to RGB, as pydicom converts them."""
    from pydicom.pixels.processing import convert_color_space

    return convert_color_space(pixels, "YBR_FULL", "RGB")

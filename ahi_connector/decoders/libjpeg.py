"""JPEG baseline / extended / lossless via pylibjpeg-libjpeg (``libjpeg.decode``), pydicom's default JPEG
decoder.

Preferred for JPEG because lossy decoders differ in IDCT and chroma upsampling: the frame checksum is computed
on the reference decode (pydicom's, without colour transform), so the same library must decode to verify it.
Colour frames come back as YCbCr; :func:`ahi_connector.decoders.jpeg.to_rgb` converts them after verification.
"""

from __future__ import annotations

import numpy as np

from .base import Codec, DecoderBackend, FrameSpec


class LibjpegBackend(DecoderBackend):
    name = "libjpeg"
    codecs = frozenset({Codec.JPEG})
    requires = "pylibjpeg-libjpeg (pip install pylibjpeg-libjpeg)"

    def unavailable_reason(self) -> str | None:
        try:
            import libjpeg  # noqa: F401
        except ImportError as exc:
            return f"pylibjpeg-libjpeg is not installed ({exc}); needs {self.requires}"
        return None

    def _decode(self, data: bytes, spec: FrameSpec) -> np.ndarray:
        import libjpeg

        return libjpeg.decode(bytes(data), colour_transform=0)

"""Frame decoders as plugins: one module per backend, a registry with an explicit preference.

Preferences (``ImageSetExporter(decoder=...)``): ``auto`` (OpenJPH, then imagecodecs-OpenJPEG, then
pylibjpeg-openjpeg), ``openjph``, ``openjpeg`` (pylibjpeg-openjpeg in a process pool), ``jpeg2k`` (imagecodecs
OpenJPEG in threads). JPEG frames use pylibjpeg-libjpeg (else libjpeg-turbo) and native frames need no decoder
whatever the preference.
"""

from .base import Codec, DecoderBackend, FrameSpec, normalize
from .registry import PREFERENCES, DecoderRegistry, resolve_codec, sniff_codec

__all__ = [
    "Codec",
    "DecoderBackend",
    "DecoderRegistry",
    "FrameSpec",
    "normalize",
    "PREFERENCES",
    "resolve_codec",
    "sniff_codec",
]

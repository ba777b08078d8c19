"""Decoder registry: which backend decodes which codec, with an explicit preference (never import order).

Decoding is a fallback chain: the backends available for a codec are tried in preference order, and the next
one is used when one *fails* on a frame (raises, or gives pixels whose CRC32 is not the metadata checksum),
not only when it is missing. Lossy decoders differ in IDCT and upsampling, and the checksum covers the
reference decode, so the chain also finds the library that reproduces it. When every backend fails,
:class:`FrameDecodeFailure` lists each backend's reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import numpy as np

from .base import Codec, DecoderBackend, FrameSpec, crc32, normalize
from .jpeg import JpegBackend
from .jpeg2k import Jpeg2kBackend
from .libjpeg import LibjpegBackend
from .native import NativeBackend
from .openjpeg import OpenJPEGBackend
from .openjph import OpenJPHBackend

log = logging.getLogger(__name__)

# Preference name -> backend names tried for HTJ2K / J2K frames. JPEG and native frames always use their own
# backend.
PREFERENCES: dict[str, tuple[str, ...]] = {
    "auto": ("openjph", "jpeg2k", "openjpeg"),
    "openjph": ("openjph",),
    "openjpeg": ("openjpeg",),
    "jpeg2k": ("jpeg2k",),
}
_FIXED: dict[Codec, tuple[str, ...]] = {Codec.JPEG: ("libjpeg", "libjpeg-turbo"), Codec.NATIVE: ("native",)}

CONTENT_TYPES: dict[str, Codec] = {
    "image/jph": Codec.HTJ2K,
    "image/jphc": Codec.HTJ2K,
    "image/j2c": Codec.J2K,
    "image/jp2": Codec.J2K,
    "image/jpeg": Codec.JPEG,
}
OCTET_STREAM = "application/octet-stream"
NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"})
SYNTAX_CODECS: dict[str, Codec] = {
    "1.2.840.10008.1.2.4.201": Codec.HTJ2K,
    "1.2.840.10008.1.2.4.202": Codec.HTJ2K,
    "1.2.840.10008.1.2.4.203": Codec.HTJ2K,
    "1.2.840.10008.1.2.4.90": Codec.J2K,
    "1.2.840.10008.1.2.4.91": Codec.J2K,
    "1.2.840.10008.1.2.4.50": Codec.JPEG,
    "1.2.840.10008.1.2.4.51": Codec.JPEG,
    **{uid: Codec.NATIVE for uid in NATIVE_SYNTAXES},
}


def sniff_codec(data: bytes) -> Codec | None:
    """Identify a J2K/HTJ2K codestream or JPEG stream from its first markers; None when neither."""
    head = bytes(data[:4096])
    if head.startswith(b"\xff\x4f\xff\x51"):
        sot = head.find(b"\xff\x90")
        return Codec.HTJ2K if head.find(b"\xff\x50", 0, sot if sot > 0 else len(head)) > 0 else Codec.J2K
    if head.startswith(b"\x00\x00\x00\x0cjP  "):
        return Codec.J2K
    if head.startswith(b"\xff\xd8"):
        return Codec.JPEG
    return None


def resolve_codec(content_type: str | None, stored_syntax: str | None, data: bytes) -> Codec:
    """Choose the codec from the response content type, then the instance's StoredTransferSyntaxUID.

    A specific image/* content type wins (J2K vs HTJ2K refined by the codestream's CAP marker, since some
    servers label both image/j2c). ``application/octet-stream`` is native only when the stored syntax is
    native and the bytes are not a codestream; otherwise the codestream's own markers decide.
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    sniffed = sniff_codec(data)
    if ctype in CONTENT_TYPES:
        declared = CONTENT_TYPES[ctype]
        if declared in (Codec.HTJ2K, Codec.J2K) and sniffed in (Codec.HTJ2K, Codec.J2K):
            return sniffed
        return declared
    if ctype not in ("", OCTET_STREAM):
        raise ValueError(
            f"unsupported content type {content_type!r} (stored transfer syntax {stored_syntax})"
        )
    if sniffed is not None:
        return sniffed
    if stored_syntax in NATIVE_SYNTAXES or stored_syntax is None:
        return Codec.NATIVE
    syntax_codec = SYNTAX_CODECS.get(stored_syntax)
    if syntax_codec is None:
        raise ValueError(
            f"stored transfer syntax {stored_syntax} with content type {content_type!r} is not supported"
        )
    return syntax_codec


class FrameDecodeFailure(ValueError):
    """Every backend of the chain failed on one frame. ``checksum_only`` is True when at least one backend
    decoded the frame and none gave the metadata checksum (the bytes or the checksum are wrong)."""

    def __init__(self, codec: Codec, reasons: list[str], checksum_only: bool) -> None:
        super().__init__(f"no backend decoded the {codec.value} frame: " + "; ".join(reasons))
        self.reasons = reasons
        self.checksum_only = checksum_only


class DecoderRegistry:
    """Holds one instance of every backend and picks one per codec from the preference.

    The choice is deterministic per (preference, codec), so every frame of a series with one codec is decoded
    by the same backend.
    """

    def __init__(self, preference: str = "auto", backends: Iterable[DecoderBackend] | None = None) -> None:
        if preference not in PREFERENCES:
            raise ValueError(f"decoder={preference!r} is not one of {sorted(PREFERENCES)}")
        self.preference = preference
        default = (
            OpenJPHBackend(),
            Jpeg2kBackend(),
            OpenJPEGBackend(),
            LibjpegBackend(),
            JpegBackend(),
            NativeBackend(),
        )
        self.backends: dict[str, DecoderBackend] = {b.name: b for b in (backends or default)}
        self._chosen: dict[Codec, DecoderBackend] = {}
        self._lock = threading.Lock()

    def candidates(self, codec: Codec) -> tuple[str, ...]:
        return _FIXED.get(codec) or PREFERENCES[self.preference]

    def explain(self, codec: Codec) -> list[str]:
        """One line per backend saying whether and why it can (not) decode ``codec``."""
        wanted = self.candidates(codec)
        lines = []
        for name, backend in self.backends.items():
            reason = backend.unavailable_reason()
            if codec not in backend.codecs:
                why = f"does not decode {codec.value}"
            elif reason:
                why = f"unavailable: {reason}"
            elif name not in wanted:
                why = f"excluded by decoder preference {self.preference!r}"
            else:
                why = "available"
            lines.append(f"{name}: {why}")
        return lines

    def select(self, codec: Codec) -> DecoderBackend:
        """The backend for ``codec``; raises LookupError listing every backend and why it was not usable."""
        with self._lock:
            chosen = self._chosen.get(codec)
            if chosen is not None:
                return chosen
            for name in self.candidates(codec):
                backend = self.backends.get(name)
                if backend and codec in backend.codecs and backend.unavailable_reason() is None:
                    log.debug("decoder for %s: %s (preference %s)", codec.value, name, self.preference)
                    self._chosen[codec] = backend
                    return backend
        raise LookupError(f"no decoder for {codec.value} frames; backends: " + "; ".join(self.explain(codec)))

    def available(self) -> list[str]:
        return [name for name, b in self.backends.items() if b.unavailable_reason() is None]

    def chain(self, codec: Codec) -> list[DecoderBackend]:
        """The selected backend first, then every other available candidate in preference order."""
        first = self.select(codec)
        rest = [
            b
            for name in self.candidates(codec)
            if (b := self.backends.get(name)) is not None
            and b is not first
            and codec in b.codecs
            and b.unavailable_reason() is None
        ]
        return [first, *rest]

    def decode(self, codec: Codec, data: bytes, spec: FrameSpec) -> np.ndarray:
        """Decode one frame (fallback chain, no checksum) and normalise it to ``spec`` (shape, dtype)."""
        return self.decode_frame(codec, data, spec, None)[0]

    def decode_frame(
        self, codec: Codec, data: bytes, spec: FrameSpec, checksum: int | None
    ) -> tuple[np.ndarray, str]:
        """Decode one frame with the first backend of :meth:`chain` that succeeds and, when ``checksum`` is
        given, reproduces it; returns the pixels and the backend's name. Raises :class:`FrameDecodeFailure`
        (every backend's reason) when none does, LookupError when no backend is available."""
        reasons: list[str] = []
        decoded_any = False
        for backend in self.chain(codec):
            try:
                pixels = normalize(backend.decode(data, spec), spec)
            except Exception as exc:  # decoder libraries raise their own types
                reasons.append(f"{backend.name}: {type(exc).__name__}: {exc}")
                continue
            decoded_any = True
            if checksum is not None:
                crc = crc32(np.ascontiguousarray(pixels)) & 0xFFFFFFFF
                if crc != checksum:
                    reasons.append(f"{backend.name}: CRC32 of decoded pixels {crc} != metadata {checksum}")
                    continue
            if reasons:
                log.debug("%s frame decoded by %s after: %s", codec.value, backend.name, "; ".join(reasons))
            return pixels, backend.name
        raise FrameDecodeFailure(codec, reasons, checksum_only=decoded_any)

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()

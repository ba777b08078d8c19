"""Reference pixel decoding for tests: original files via pydicom, served frames via imagecodecs."""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian


def original_frames(path: str | Path) -> list[np.ndarray]:
    """Every frame of a file as pydicom decodes it (stored values, no colour conversion)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is None:  # files without (0002,0010): the syntax pydicom read them with
            syntax = ImplicitVRLittleEndian if ds.original_encoding[0] else ExplicitVRLittleEndian
            ds.file_meta.TransferSyntaxUID = syntax
        decoder = get_decoder(syntax)
        if ds.get("BitsAllocated") == 1 and int(ds.get("NumberOfFrames", 1) or 1) > 1:
            # 1-bit frames packed back to back: pydicom 3.0 splits them only when decoding all at once
            return [np.array(frame) for frame in decoder.as_array(ds, as_rgb=False)[0]]
        return [np.array(arr) for arr, _ in decoder.iter_array(ds, as_rgb=False)]


def decode_served(data: bytes, content_type: str, like: np.ndarray) -> np.ndarray:
    """Decode a GetImageFrame body (HTJ2K or raw little-endian samples shaped like ``like``)."""
    if content_type == "image/jph":
        return imagecodecs.htj2k_decode(data)
    if content_type == "application/octet-stream":
        return np.frombuffer(data, dtype=like.dtype.newbyteorder("<")).reshape(like.shape)
    raise ValueError(f"no test decoder for content type {content_type}")


def crc32_of(arr: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())


def original_fragments(path: str | Path) -> list[bytes]:
    """The encapsulated frame bytes of a compressed file (one item per frame)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    return [bytes(f) for f in pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=nframes)]


FALLBACK = {
    "1.2.840.10008.1.2.4.50": imagecodecs.jpeg8_decode,
    "1.2.840.10008.1.2.4.51": imagecodecs.jpeg8_decode,
    "1.2.840.10008.1.2.4.91": imagecodecs.jpeg2k_decode,
}


def reference_frames(path: str | Path) -> list[np.ndarray]:
    """pydicom's frames; for lossy JPEG / JPEG 2000 files pydicom rejects, imagecodecs' decode."""
    try:
        return original_frames(path)
    except Exception:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            syntax = str(pydicom.dcmread(path).file_meta.get("TransferSyntaxUID", ""))
        if syntax not in FALLBACK:
            raise
        return [np.asarray(FALLBACK[syntax](f)) for f in original_fragments(path)]

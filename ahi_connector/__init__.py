"""AWS HealthImaging ImageSet → DICOM / volume connector.

Light on import (no torch / holoscan / starlette); heavy submodules load on first attribute access.

    from ahi_connector import ImageSetExporter, make_ahi_client
    with ImageSetExporter(make_ahi_client(endpoint_url=...)) as ex:
        datasets = ex.to_datasets(datastore_id, image_set_id)
        volume = ex.to_volume(datastore_id, image_set_id, series_uid)
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    AHIConfigError,
    AHICredentialsError,
    AHIError,
    AHIRequestError,
    DicomizeError,
    ExportDeadlineError,
    FrameChecksumError,
    FrameDecodeError,
    FrameError,
    FrameFetchError,
    FrameRef,
    GeometryError,
    ImageSetNotFoundError,
    MetadataError,
    SeriesNotFoundError,
    UnsupportedFrameFormatError,
)

_LAZY = {
    "make_ahi_client": "client",
    "ImageSetExporter": "exporter",
    "ImageSetMetadata": "metadata",
    "Volume": "volume",
    "VolumeGeometry": "geometry",
    "AHItoDICOM": "compat",
    "RetryPolicy": "fetch",
}

__all__ = [
    "AHIConfigError",
    "AHICredentialsError",
    "AHIError",
    "AHIRequestError",
    "DicomizeError",
    "ExportDeadlineError",
    "FrameChecksumError",
    "FrameDecodeError",
    "FrameError",
    "FrameFetchError",
    "FrameRef",
    "GeometryError",
    "ImageSetNotFoundError",
    "MetadataError",
    "SeriesNotFoundError",
    "UnsupportedFrameFormatError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ahi_connector' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)

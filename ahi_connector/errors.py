"""One exception tree for the connector, rooted at :class:`AHIError`.

Every error carries ``http_status`` (what a server edge should answer) and a message that names what failed
(datastore / image set / series / instance / frame ID, DICOM tag) and, where there is one, the likely fix.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FrameRef:
    """Where one image frame lives; used to build messages that name every ID."""

    datastore_id: str
    image_set_id: str
    series_uid: str
    sop_instance_uid: str
    frame_id: str
    frame_index: int = 0

    def describe(self) -> str:
        return (
            f"frame {self.frame_id} (frame #{self.frame_index + 1} of instance {self.sop_instance_uid}, "
            f"series {self.series_uid}, image set {self.image_set_id}, datastore {self.datastore_id})"
        )


class AHIError(Exception):
    """Root of every error raised by ``ahi_connector``."""

    http_status: int = 500


class AHIConfigError(AHIError):
    """Invalid connector configuration (bad argument, unknown decoder name, ...)."""

    http_status = 400


class AHICredentialsError(AHIError):
    """No usable AWS credentials, or the service rejected them."""

    http_status = 403


class AHIRequestError(AHIError):
    """A HealthImaging API call failed (after botocore's retries)."""

    def __init__(self, message: str, *, http_status: int = 502, error_code: str | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_code = error_code


class ImageSetNotFoundError(AHIRequestError):
    """The datastore or image set (or version) does not exist."""

    def __init__(self, message: str, *, error_code: str | None = "ResourceNotFoundException") -> None:
        super().__init__(message, http_status=404, error_code=error_code)


class MetadataError(AHIError):
    """The image set metadata JSON is missing, not gzip/JSON, or lacks a required element."""

    http_status = 502


class SeriesNotFoundError(AHIError):
    """The requested series is not in the image set."""

    http_status = 404


class GeometryError(AHIError):
    """Slices cannot form one regular volume (missing IPP/IOP, mixed orientation, non-uniform spacing...)."""

    http_status = 422


class DicomizeError(AHIError):
    """An attribute from the metadata cannot be turned into a DICOM element; the message names the instance,
    series, image set and tag. Bad data in the user's image set, not a gateway failure: 422."""

    http_status = 422


class FrameError(AHIError):
    """A frame could not be fetched, decoded or verified; names the frame and all its parents."""

    http_status = 502

    def __init__(self, message: str, frame: FrameRef | None = None) -> None:
        super().__init__(message)
        self.frame = frame


class FrameFetchError(FrameError):
    """GetImageFrame kept failing for one frame (retries exhausted or non-retryable error)."""


class FrameChecksumError(FrameError):
    """The CRC32 of a decoded frame does not match the metadata checksum."""


class FrameDecodeError(FrameError):
    """A frame's bytes could not be decoded by the selected backend."""


class UnsupportedFrameFormatError(FrameError):
    """No available decoder backend can decode this frame; the message lists every backend and why."""

    http_status = 415


class ExportDeadlineError(AHIError):
    """The whole export did not finish within its deadline; names the frames still outstanding."""

    http_status = 504

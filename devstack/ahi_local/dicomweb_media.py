"""HTTP plumbing of ahi-local's DICOMweb: media types, Accept negotiation, multipart/related bodies, errors.

DICOMweb errors are answered with the status PS3.18 gives them (400 malformed request, 404 unknown resource,
406 no acceptable representation, 409 STOW conflict, 413 payload too large, 415 unsupported media type), a
``{"message": reason}`` JSON body and the reason again in a ``Warning: 299`` header (PS3.18 8.6.3), so both
DICOMweb clients and AWS-style callers see why.
"""

from __future__ import annotations

import json

from starlette.responses import Response

from ahi_connector.multipart import (
    MediaType,
    MultipartError,
    Part,
    multipart_body,
    parse_media_type,
    split_header,
)
from ahi_connector.multipart import split_multipart as _split_multipart

from .ids import new_id

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
MULTIPART = "multipart/related"
OCTET = "application/octet-stream"


class DicomWebError(Exception):
    """A DICOMweb request that cannot be served; ``status`` is the HTTP status, ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def error_response(error: DicomWebError) -> Response:
    warning = error.reason.replace('"', "'").encode("ascii", "replace").decode()[:900]
    return Response(
        json.dumps({"message": error.reason}),
        status_code=error.status,
        media_type="application/json",
        headers={"Warning": f'299 ahi-local "{warning}"', "x-amzn-RequestId": new_id()},
    )


def parse_accept(header: str | None) -> list[MediaType]:
    """The media ranges of an Accept header, best first (a missing or empty header means ``*/*``)."""
    if not header or not header.strip():
        return [MediaType("*/*", {})]
    try:
        ranges = [parse_media_type(item) for item in split_header(header, ",")]
    except ValueError as exc:
        raise DicomWebError(400, f"Accept header {header!r} is malformed: {exc}") from exc
    return sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q)


def matches(media_range: str, name: str) -> bool:
    """Whether an Accept media range (``*/*``, ``application/*``, exact) covers media type ``name``."""
    if media_range in ("*/*", "*"):
        return True
    major, _, minor = media_range.partition("/")
    return minor == "*" and name.startswith(major + "/") or media_range == name


def negotiate_json(header: str | None, what: str) -> None:
    """QIDO-RS results and WADO-RS metadata come only as DICOM JSON; anything else is a 406."""
    for media in parse_accept(header):
        if matches(media.name, DICOM_JSON) or media.name == "application/json":
            return
    raise DicomWebError(
        406,
        f"{what}: Accept {header!r} offers no representation this service has; it answers "
        f'{DICOM_JSON} only (no multipart/related; type="application/dicom+xml")',
    )


def split_multipart(body: bytes, boundary: str) -> list[Part]:
    """:func:`ahi_connector.multipart.split_multipart`, a malformed body answered as a 400."""
    try:
        return _split_multipart(body, boundary)
    except MultipartError as exc:
        raise DicomWebError(400, str(exc)) from exc


__all__ = ["MediaType", "matches", "multipart_body", "parse_media_type"]

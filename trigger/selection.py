"""Which image sets are worth an inference: a metadata-only pre-filter before anything is submitted.

The application's own series selection (``app.selection``) is the authority and runs inside the container; it
needs pixel headers and MONAI. This pre-filter uses only what GetImageSetMetadata returns, so the trigger and
the back-fill never pay an endpoint invocation for an image set the application would reject on its metadata
alone: no CT series, or only CT series with fewer than :data:`MIN_SLICES` instances, or only localizers by
name.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from typing import Any

#: The application's minimum (``app.selection.MIN_SLICES``; a test keeps the two equal).
MIN_SLICES = 16
LOCALIZER_DESCRIPTION = re.compile(r"(?i)\b(scout|localizer|localiser|topogram|surview|scanogram)\b")


@dataclass(frozen=True)
class Selection:
    """The verdict on one image set: ``ok`` with the CT series it would segment, or why it is skipped."""

    ok: bool
    reason: str
    series_uid: str | None = None
    instances: int = 0


def decode_metadata(blob: bytes) -> dict[str, Any]:
    """The JSON document of a GetImageSetMetadata ``imageSetMetadataBlob`` (gzip, or plain JSON)."""
    data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    doc = json.loads(data.decode("utf-8"))
    if not isinstance(doc, dict):
        raise ValueError("image set metadata is not a JSON object")
    return doc


def select_ct(metadata: dict[str, Any], min_slices: int = MIN_SLICES) -> Selection:
    """The largest CT series of ``metadata`` with at least ``min_slices`` instances, or why there is none."""
    series = (metadata.get("Study") or {}).get("Series") or {}
    found: list[str] = []
    best: tuple[int, str] | None = None
    for uid, entry in series.items():
        dicom = entry.get("DICOM") or {}
        modality = str(dicom.get("Modality", "") or "").strip().upper()
        count = len(entry.get("Instances") or {})
        description = str(dicom.get("SeriesDescription", "") or "")
        found.append(f"{uid} ({modality or '?'}, {count} instances)")
        if modality != "CT" or count < min_slices or LOCALIZER_DESCRIPTION.search(description):
            continue
        if best is None or count > best[0]:
            best = (count, uid)
    if best is None:
        listing = ", ".join(found) or "no series"
        return Selection(
            False, f"no CT series with at least {min_slices} instances (not a localizer); found: {listing}"
        )
    return Selection(True, f"CT series {best[1]} ({best[0]} instances)", best[1], best[0])

"""Which series of the input the spleen model segments: the application's series-selection rules.

The rules, applied to every series of every study in the input (an image set, all image sets of an AHI study,
or a DICOM folder):

1. Modality is CT (``CT_SELECTION_RULES``, the SDK selector's JSON rule; checked again here for header-only
input).
2. Not a localizer: ImageType (0008,0008) does not contain ``LOCALIZER`` and SeriesDescription does not name a
   scout / topogram / surview / scanogram.
3. Grayscale, one frame per instance: SamplesPerPixel (0028,0002) is 1, PhotometricInterpretation
(0028,0004) is
   MONOCHROME1/2, NumberOfFrames (0028,0008) absent or 1 (the SDK volume operator stacks single-frame
   instances).
4. Axial: the slice normal (from ImageOrientationPatient (0020,0037)) points mostly along the patient z axis.
5. At least :data:`MIN_SLICES` instances.

Documented choice when several series pass: the **largest axial CT series** (most instances; ties broken by
the lower SeriesNumber, then the SeriesInstanceUID) — the thin-slice reconstruction when a study holds thin
and thick ones. When none passes, the error is specific (:mod:`app.errors`: ``NoCTSeriesError``,
``LocalizerOnlyError``, ``UnsupportedPixelFormatError``, ``NonAxialSeriesError``, ``TooFewSlicesError``; all
HTTP 422) and its message lists every CT series with the reason it was rejected.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.core.domain.dicom_series_selection import SelectedSeries, StudySelectedSeries
from monai.deploy.core.domain.dicom_study import DICOMStudy

from .errors import (
    InputNotFoundError,
    LocalizerOnlyError,
    NoCTSeriesError,
    NonAxialSeriesError,
    SeriesSelectionError,
    TooFewSlicesError,
    UnsupportedPixelFormatError,
)

logger = logging.getLogger(__name__)

#: Name of the selection in the SDK's StudySelectedSeries.
SELECTION_NAME = "CT Series"
#: The SDK DICOMSeriesSelectorOperator rule (its JSON format): CT series only.
CT_SELECTION_RULES = (
    '{"selections": [{"name": "' + SELECTION_NAME + '", "conditions": {"Modality": "(?i)^CT$"}}]}'
)
#: Fewest slices accepted. 16 slices at the model's 2 mm target spacing are 32 mm, about a third of an adult
#: spleen's cranio-caudal extent; anything thinner is a partial acquisition the model cannot measure.
MIN_SLICES = 16
#: A series is axial when |normal . z| is at least this (about 35 degrees of tilt at most).
AXIAL_MIN_COSINE = 0.8
LOCALIZER_DESCRIPTION = re.compile(r"(?i)\b(scout|localizer|localiser|topogram|surview|scanogram)\b")
GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")


@dataclass(frozen=True)
class Rejection:
    """Why one CT series cannot be segmented."""

    error: type[SeriesSelectionError]
    reason: str


def _first_dataset(series: DICOMSeries):  # -> pydicom.Dataset | None
    sops = series.get_sop_instances()
    return sops[0].get_native_sop_instance() if sops else None


def _is_ct(series: DICOMSeries) -> bool:
    return str(series.Modality or "").strip().upper() == "CT"


def _image_type(ds) -> list[str]:
    value = ds.get("ImageType", None)
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v).strip().upper() for v in values]


def _axial_cosine(ds) -> float | None:
    iop = ds.get("ImageOrientationPatient", None)
    if iop is None or len(iop) != 6:
        return None
    normal = np.cross(np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float))
    norm = float(np.linalg.norm(normal))
    return abs(float(normal[2])) / norm if norm > 0 else None


def rejection(series: DICOMSeries) -> Rejection | None:
    """The first rule (2–5 of the module doc) that a CT series breaks, or None when it can be segmented."""
    ds = _first_dataset(series)
    if ds is None:
        return Rejection(TooFewSlicesError, "no instances")
    description = str(series.SeriesDescription or ds.get("SeriesDescription", "") or "")
    if "LOCALIZER" in _image_type(ds) or LOCALIZER_DESCRIPTION.search(description):
        return Rejection(
            LocalizerOnlyError,
            f"localizer/scout (ImageType {_image_type(ds)}, SeriesDescription {description!r})",
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if samples != 1 or photometric not in GRAYSCALE:
        return Rejection(
            UnsupportedPixelFormatError,
            f"(0028,0002) Samples per Pixel {samples} / "
            f"(0028,0004) Photometric Interpretation {photometric!r}; "
            "only single-sample MONOCHROME1/2 CT can be segmented",
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return Rejection(
            UnsupportedPixelFormatError,
            f"multi-frame instance ((0028,0008) Number of Frames {frames}); "
            "one frame per instance is required",
        )
    cosine = _axial_cosine(ds)
    if cosine is None:
        return Rejection(NonAxialSeriesError, "(0020,0037) Image Orientation (Patient) missing or malformed")
    if cosine < AXIAL_MIN_COSINE:
        return Rejection(
            NonAxialSeriesError, f"not axial (slice normal . z = {cosine:.2f} < {AXIAL_MIN_COSINE})"
        )
    count = len(series.get_sop_instances())
    if count < MIN_SLICES:
        return Rejection(TooFewSlicesError, f"{count} slices, fewer than the minimum of {MIN_SLICES}")
    return None


def _series_key(series: DICOMSeries) -> tuple[int, float, str]:
    number = series.SeriesNumber
    number = float(number) if isinstance(number, (int, float)) else float("inf")
    return (-len(series.get_sop_instances()), number, str(series.SeriesInstanceUID))


def _describe(series: DICOMSeries) -> str:
    return (
        f"series {series.SeriesInstanceUID} (#{series.SeriesNumber}, {series.Modality}, "
        f"{len(series.get_sop_instances())} instances, {series.SeriesDescription!r})"
    )


def _no_ct_message(all_series: Sequence[DICOMSeries], source: str) -> str:
    found = ", ".join(f"{s.SeriesInstanceUID} ({s.Modality})" for s in all_series) or "none"
    return (
        f"no CT series in {source}; series found: {found}. "
        "The spleen model needs an axial abdominal CT series"
    )


def choose_series(
    studies: Sequence[DICOMStudy],
    rule_matched: Iterable[StudySelectedSeries] | None = None,
    source: str = "the input",
) -> list[StudySelectedSeries]:
    """Apply the rules of this module and return the SDK's ``[StudySelectedSeries]`` with the one chosen
    series.

    ``rule_matched`` is what the SDK selector matched with :data:`CT_SELECTION_RULES` (None: check the
    modality here only). ``source`` names the input in error messages (e.g. ``"image set <id>"``).

    Raises:
        InputNotFoundError: no series at all.
        SeriesSelectionError subclass: no series can be segmented (see the module doc).
    """
    pairs = [(study, series) for study in studies for series in study.get_all_series()]
    if not pairs:
        raise InputNotFoundError(f"no DICOM series in {source}")
    allowed = None
    if rule_matched is not None:
        allowed = {str(sel.series.SeriesInstanceUID) for sss in rule_matched for sel in sss.selected_series}
    ct = [
        (st, se)
        for st, se in pairs
        if _is_ct(se) and (allowed is None or str(se.SeriesInstanceUID) in allowed)
    ]
    if not ct:
        raise NoCTSeriesError(_no_ct_message([se for _, se in pairs], source))
    verdicts = [(st, se, rejection(se)) for st, se in ct]
    usable = sorted(((st, se) for st, se, why in verdicts if why is None), key=lambda p: _series_key(p[1]))
    if not usable:
        rejected = sorted(verdicts, key=lambda v: _series_key(v[1]))
        details = "; ".join(f"{_describe(se)}: {why.reason}" for _, se, why in rejected if why)
        first = rejected[0][2]
        assert first is not None
        raise first.error(f"no CT series in {source} can be segmented: {details}")
    study, series = usable[0]
    if len(usable) > 1:
        logger.info(
            "%d usable CT series in %s; chose the largest: %s", len(usable), source, _describe(series)
        )
    for _, se, why in verdicts:
        if why is not None:
            logger.info("skipped %s in %s: %s", _describe(se), source, why.reason)
    selected = StudySelectedSeries(study)
    selected.add_selected_series(SelectedSeries(SELECTION_NAME, series, None))
    return [selected]

"""ReportOperator: the run's JSON report (spleen volume, UIDs, image set IDs, model, per-stage timings).

Spleen volume = mask voxel count x voxel volume, the voxel volume being row spacing x column spacing x slice
spacing of the source series (PixelSpacing (0028,0030) and the distance between adjacent slice positions, as
computed by the SDK's DICOMSeriesToVolumeOperator), in mL (1 mL = 1000 mm^3).

Named inputs:
    spleen_mask: binary ``Image`` (DHW) with the source series' metadata.
    study_selected_series_list: the selected series (study/series UIDs).
    seg_path: ``str`` path of the SEG (received last: the report is written after the SEG exists).
    stl_path: ``str`` path of the STL or ``""`` (only declared when the app writes an STL).
    preview_path: ``str`` path of the preview PNG or ``""``.
Named output: none. The report is stored in the run's :class:`~app.run_record.RunRecord` (with the SEG, STL
and preview paths) and, when ``output_file`` is given (``python -m app``), written there as JSON. Its
``quality`` object holds the flags of :func:`app.quality.quality_flags` (spleen found, volume plausibility,
share of the mask at the edge of the field of view, components; probabilities and removed components are not
reachable here, and it says so).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.deploy.core import Fragment, Image, Operator, OperatorSpec

from ..bundle_model import ModelIdentity
from ..quality import quality_flags
from ..request import SegRequest
from ..run_record import STAGE_REPORT, RunRecord

logger = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = 1


def voxel_volume_mm3(image: Image) -> float:
    """Volume of one voxel of an SDK DICOM-derived Image (row x column x slice spacing), in mm^3."""
    meta = image.metadata()
    return (
        float(meta["row_pixel_spacing"])
        * float(meta["col_pixel_spacing"])
        * float(meta["depth_pixel_spacing"])
    )


def spleen_measurements(mask: Image) -> dict[str, Any]:
    """Voxel count, voxel volume (mm^3) and spleen volume (mL) of a binary mask Image."""
    count = int(np.count_nonzero(np.asarray(mask.asnumpy())))
    voxel = voxel_volume_mm3(mask)
    return {
        "voxelCount": count,
        "voxelVolumeMm3": round(voxel, 6),
        "volumeMl": round(count * voxel / 1000.0, 3),
    }


def build_report(
    *,
    mask: Image,
    selected: Any,
    seg_path: str,
    stl_path: str | None,
    model: ModelIdentity,
    request: SegRequest,
    record: RunRecord,
    preview_path: str | None = None,
) -> dict[str, Any]:
    """The report dict (see the module doc); ``selected`` is the ``[StudySelectedSeries]`` of the run."""
    study_selected = selected[0]
    series = study_selected.selected_series[0].series
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    return {
        "schemaVersion": REPORT_SCHEMA_VERSION,
        "request": request.to_json(),
        "datastoreId": record.datastore_id,
        "imageSetIds": list(record.image_set_ids),
        "studyInstanceUid": str(study_selected.study.StudyInstanceUID),
        "seriesInstanceUid": str(series.SeriesInstanceUID),
        "seriesDescription": str(series.SeriesDescription or ""),
        "sliceCount": len(series.get_sop_instances()),
        "volumeShapeDhw": list(np.asarray(mask.asnumpy()).shape),
        "spleen": spleen_measurements(mask),
        "quality": quality_flags(np.asarray(mask.asnumpy()), voxel_volume_mm3(mask) / 1000.0),
        "model": {
            "name": model.name,
            "version": model.version,
            "sha256": model.sha256,
            "device": model.device,
        },
        "seg": {
            "path": str(seg_path),
            "sopInstanceUid": str(seg.SOPInstanceUID),
            "seriesInstanceUid": str(seg.SeriesInstanceUID),
            "frameCount": int(seg.get("NumberOfFrames", 0) or 0),
        },
        "stlPath": stl_path or None,
        "previewPath": preview_path or None,
        "fetch": record.fetch_summary(),
        "timingsSeconds": record.timings_ordered(),
    }


class ReportOperator(Operator):
    """See the module doc."""

    INPUT_MASK = "spleen_mask"
    INPUT_SELECTED_SERIES = "study_selected_series_list"
    INPUT_SEG_PATH = "seg_path"
    INPUT_STL_PATH = "stl_path"
    INPUT_PREVIEW_PATH = "preview_path"

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        output_file: Path | None,
        model: ModelIdentity,
        request: SegRequest,
        with_stl: bool,
        record: RunRecord,
        **kwargs: Any,
    ) -> None:
        self._output_file = Path(output_file) if output_file is not None else None
        self._model = model
        self._request = request
        self._with_stl = with_stl
        self._record = record
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_MASK)
        spec.input(self.INPUT_SELECTED_SERIES)
        spec.input(self.INPUT_SEG_PATH)
        if self._with_stl:
            spec.input(self.INPUT_STL_PATH)
        spec.input(self.INPUT_PREVIEW_PATH)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        mask = op_input.receive(self.INPUT_MASK)
        selected = op_input.receive(self.INPUT_SELECTED_SERIES)
        seg_path = op_input.receive(self.INPUT_SEG_PATH)
        stl_path = op_input.receive(self.INPUT_STL_PATH) if self._with_stl else None
        preview_path = op_input.receive(self.INPUT_PREVIEW_PATH)
        with self._record.stage(STAGE_REPORT):
            report = build_report(
                mask=mask,
                selected=selected,
                seg_path=seg_path,
                stl_path=stl_path,
                preview_path=preview_path,
                model=self._model,
                request=self._request,
                record=self._record,
            )
            self._record.report = report
            self._record.seg_path = Path(seg_path)
            self._record.stl_path = Path(stl_path) if stl_path else None
            self._record.preview_path = Path(preview_path) if preview_path else None
            if self._output_file is not None:
                self._output_file.parent.mkdir(parents=True, exist_ok=True)
                self._output_file.write_text(json.dumps(report, indent=2) + "\n")
        logger.info(
            "spleen %.1f mL (%d voxels) in series %s",
            report["spleen"]["volumeMl"],
            report["spleen"]["voxelCount"],
            report["seriesInstanceUid"],
        )

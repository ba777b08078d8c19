"""SpleenPreviewOperator: ``preview.png``, the three orthogonal views of the CT with the spleen outline.

The picture is drawn by :func:`ahi_connector.preview.render_preview` (see there for layout and orientation);
this operator gives it the CT, the mask and the series affine
(:func:`~app.operators.spleen_stl_operator.series_affine`, the same placement as the STL), and a caption
with the spleen volume, the model and the series.

Named inputs:
    image: the source CT ``Image`` (DHW, HU) from DICOMSeriesToVolumeOperator.
    spleen_mask: binary ``Image`` (DHW) on the same grid.
    study_selected_series_list: the selected series (geometry, description, UID).
Named output:
    preview_path: ``str`` path of the PNG, or ``""`` when the slices do not form one regular stack (logged).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec

from ahi_connector.errors import GeometryError
from ahi_connector.preview import render_preview

from ..bundle_model import ModelIdentity
from ..run_record import STAGE_PREVIEW, RunRecord
from .report_operator import spleen_measurements
from .spleen_stl_operator import series_affine

logger = logging.getLogger(__name__)


def preview_caption(volume_ml: float, model: ModelIdentity, series: Any) -> list[str]:
    """Caption lines: spleen volume and model; series description and UID."""
    description = str(getattr(series, "SeriesDescription", "") or "").strip()
    uid = str(getattr(series, "SeriesInstanceUID", "") or "")
    return [
        f"Spleen {volume_ml:.1f} mL  -  model {model.name} {model.version}",
        f"Series {description + '  ' if description else ''}{uid}",
    ]


class SpleenPreviewOperator(Operator):
    """See the module doc."""

    INPUT_IMAGE = "image"
    INPUT_MASK = "spleen_mask"
    INPUT_SELECTED_SERIES = "study_selected_series_list"
    OUTPUT_PREVIEW_PATH = "preview_path"

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        output_file: Path,
        model: ModelIdentity,
        record: RunRecord | None = None,
        **kwargs: Any,
    ) -> None:
        self._output_file = Path(output_file)
        self._model = model
        self._record = record if record is not None else RunRecord()
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_IMAGE)
        spec.input(self.INPUT_MASK)
        spec.input(self.INPUT_SELECTED_SERIES)
        spec.output(self.OUTPUT_PREVIEW_PATH)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        image = op_input.receive(self.INPUT_IMAGE)
        mask = op_input.receive(self.INPUT_MASK)
        selected = op_input.receive(self.INPUT_SELECTED_SERIES)
        series = selected[0].selected_series[0].series
        datasets = [sop.get_native_sop_instance() for sop in series.get_sop_instances()]
        written = ""
        with self._record.stage(STAGE_PREVIEW):
            try:
                affine = series_affine(datasets)
            except GeometryError as exc:
                logger.warning("no preview written: the series is not one regular stack: %s", exc)
            else:
                caption = preview_caption(spleen_measurements(mask)["volumeMl"], self._model, series)
                written = str(
                    render_preview(
                        np.asarray(image.asnumpy()),
                        affine,
                        self._output_file,
                        mask=np.asarray(mask.asnumpy()),
                        caption=caption,
                    )
                )
        op_output.emit(written, self.OUTPUT_PREVIEW_PATH)

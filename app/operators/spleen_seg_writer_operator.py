"""SpleenSegWriterOperator: the SDK's DICOMSegmentationWriterOperator set up for the spleen, emitting the
SEG path.

Segment 1 is labelled "Spleen", SNOMED CT category Anatomical Structure (91723000) and type Spleen (78961009),
with the model's name/version as the algorithm identification; SeriesDescription is "AI generated Seg, not for
clinical use."; the Contributing Equipment Sequence names the model (its DeviceUID derives from the model.ts
SHA-256). The SEG (highdicom, BINARY) holds one frame per slice that contains the spleen and references
exactly those source instances: highdicom is given only those slices and their source instances (its cost
grows with every source instance it checks and references: ~0.7 s for 300 slices, a few tenths for the ~80
that hold a spleen), which gives the same frames as ``omit_empty_frames`` over the whole series. An all-empty
mask keeps all frames and references every instance (highdicom's rule).

Named inputs:
    seg_image: binary spleen mask ``Image`` (DHW, same grid as the source series).
    study_selected_series_list: the selected series (source instances of the SEG).
Named output:
    seg_path: ``str`` path of the written SEG file (lets the report run after the SEG exists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from monai.deploy.core import Fragment, OperatorSpec
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.operators.dicom_seg_writer_operator import (
    DICOMSegmentationWriterOperator,
    SegmentDescription,
)
from monai.deploy.operators.dicom_utils import ModelInfo
from pydicom.sr.codedict import codes

from ..bundle_model import ModelIdentity
from ..errors import AppError
from ..run_record import STAGE_SEG_WRITE, RunRecord

SEGMENT_LABEL = "Spleen"
SEG_SERIES_DESCRIPTION = "AI generated Seg, not for clinical use."
MODEL_CREATOR = "ahi-spleen-seg"
LO_MAX = 64  # DICOM VR LO


def spleen_segment_descriptions(model: ModelIdentity) -> list[SegmentDescription]:
    """The one segment of the SEG: the spleen, described with SNOMED CT codes and the model as algorithm."""
    return [
        SegmentDescription(
            segment_label=SEGMENT_LABEL,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.Spleen,
            algorithm_name=model.name[:LO_MAX],
            algorithm_family=codes.DCM.ArtificialIntelligence,
            algorithm_version=(model.version or "unknown")[:LO_MAX],
        )
    ]


class SpleenSegWriterOperator(DICOMSegmentationWriterOperator):
    """See the module doc. ``output_folder`` should be empty: the new ``*.dcm`` in it is the SEG."""

    INPUT_SEG_IMAGE = "seg_image"
    INPUT_SELECTED_SERIES = "study_selected_series_list"
    OUTPUT_SEG_PATH = "seg_path"

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        model: ModelIdentity,
        output_folder: Path,
        record: RunRecord | None = None,
        **kwargs: Any,
    ) -> None:
        self._record = record if record is not None else RunRecord()
        super().__init__(
            fragment,
            *args,
            segment_descriptions=spleen_segment_descriptions(model),
            output_folder=Path(output_folder),
            model_info=ModelInfo(
                MODEL_CREATOR, model.name[:LO_MAX], model.version[:LO_MAX], model.device_uid
            ),
            custom_tags={"SeriesDescription": SEG_SERIES_DESCRIPTION},
            omit_empty_frames=True,
            **kwargs,
        )

    def setup(self, spec: OperatorSpec) -> None:
        super().setup(spec)
        spec.output(self.OUTPUT_SEG_PATH)

    def create_dicom_seg(self, image: np.ndarray, dicom_series: DICOMSeries, output_dir: Path) -> None:
        """The SDK's SEG writing, given only the slices that contain a segment (see the module doc)."""
        mask = np.asarray(image)
        instances = dicom_series.get_sop_instances()
        if mask.ndim != 3 or len(instances) != mask.shape[0]:
            super().create_dicom_seg(image, dicom_series, output_dir)
            return
        keep = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
        if len(keep) in (0, mask.shape[0]):
            super().create_dicom_seg(image, dicom_series, output_dir)
            return
        subset = DICOMSeries(dicom_series.SeriesInstanceUID)
        for k in keep:
            subset.add_sop_instance(instances[k].get_native_sop_instance())
        super().create_dicom_seg(mask[keep], subset, output_dir)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        folder = Path(self.output_folder)
        before = set(folder.glob("*.dcm")) if folder.is_dir() else set()
        with self._record.stage(STAGE_SEG_WRITE):
            super().compute(op_input, op_output, context)
        written = sorted(set(folder.glob("*.dcm")) - before)
        if len(written) != 1:
            raise AppError(f"expected one new SEG file in {str(folder)!r}, found {[p.name for p in written]}")
        op_output.emit(str(written[0]), self.OUTPUT_SEG_PATH)

"""SpleenMaskOperator: the bundle's label map -> a binary spleen mask on the source volume's grid.

Named inputs:
    image: the source CT ``Image`` from DICOMSeriesToVolumeOperator (DHW, HU; its metadata gives the
    geometry).
    pred: the label map ``Image`` from MonaiBundleInferenceOperator (DHW after the SDK's WHD->DHW swap).

Named output:
    spleen_mask: ``Image`` (DHW, uint8 0/1, spleen class only) carrying the *source image's* metadata, so
    the SEG
    writer, the STL converter and the report all see the geometry of the input series.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.deploy.core import Fragment, Image, Operator, OperatorSpec

from ..errors import InferenceOutputError
from ..run_record import STAGE_MASK, RunRecord


def spleen_mask(image: Image, pred: Image, spleen_label: int) -> Image:
    """Binary mask (uint8, 1 = spleen) of ``pred == spleen_label`` with ``image``'s metadata.

    Raises:
        InferenceOutputError: the label map's shape differs from the source volume's (the bundle's
        postprocessing
            must invert its spatial transforms back to the source grid).
    """
    labels = np.asarray(pred.asnumpy())
    source_shape = tuple(np.asarray(image.asnumpy()).shape)
    if labels.ndim == 4 and labels.shape[0] == 1:
        labels = labels[0]
    if tuple(labels.shape) != source_shape:
        raise InferenceOutputError(
            f"model output shape {tuple(labels.shape)} differs from the source volume {source_shape} (DHW); "
            "the bundle's postprocessing must invert its spatial transforms (Invertd) to the source grid"
        )
    mask = (labels == spleen_label).astype(np.uint8)
    return Image(mask, metadata=dict(image.metadata()))


class SpleenMaskOperator(Operator):
    """See the module doc."""

    INPUT_IMAGE = "image"
    INPUT_PRED = "pred"
    OUTPUT_MASK = "spleen_mask"

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        spleen_label: int,
        record: RunRecord | None = None,
        **kwargs: Any,
    ) -> None:
        self._spleen_label = spleen_label
        self._record = record if record is not None else RunRecord()
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_IMAGE)
        spec.input(self.INPUT_PRED)
        spec.output(self.OUTPUT_MASK)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        image = op_input.receive(self.INPUT_IMAGE)
        pred = op_input.receive(self.INPUT_PRED)
        with self._record.stage(STAGE_MASK):
            mask = spleen_mask(image, pred, self._spleen_label)
        op_output.emit(mask, self.OUTPUT_MASK)

"""SpleenSTLOperator: surface mesh (STL) of the spleen mask, via the SDK's STLConverter.

The SDK's ``STLConversionOperator`` meshes every non-zero label (its ``class_id`` filter is applied to an
array it
then does not use) and fails on an empty mask; this operator feeds the converter the binary spleen mask only
and
writes no file when the mask is empty.

Named input:
    spleen_mask: binary ``Image`` (DHW) with the source series' metadata.
Named output:
    stl_path: ``str`` path of the STL file, or ``""`` when the mask is empty.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from monai.deploy.core import Fragment, Image, Operator, OperatorSpec
from monai.deploy.operators.stl_conversion_operator import STLConverter

from ..run_record import STAGE_STL, RunRecord

logger = logging.getLogger(__name__)


def write_spleen_stl(mask: Image, output_file: Path) -> Path | None:
    """Write the STL of the largest connected component of ``mask``; None (no file) when the mask is empty."""
    if not np.any(np.asarray(mask.asnumpy())):
        logger.info("spleen mask is empty: no STL written")
        return None
    output_file.parent.mkdir(parents=True, exist_ok=True)
    STLConverter().convert(
        image=mask, output_file=output_file, class_ids=1, keep_largest_connected_component=True
    )
    return output_file


class SpleenSTLOperator(Operator):
    """See the module doc."""

    INPUT_MASK = "spleen_mask"
    OUTPUT_STL_PATH = "stl_path"

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        output_file: Path,
        record: RunRecord | None = None,
        **kwargs: Any,
    ) -> None:
        self._output_file = Path(output_file)
        self._record = record if record is not None else RunRecord()
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_MASK)
        spec.output(self.OUTPUT_STL_PATH)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        mask = op_input.receive(self.INPUT_MASK)
        with self._record.stage(STAGE_STL):
            written = write_spleen_stl(mask, self._output_file)
        op_output.emit(str(written) if written else "", self.OUTPUT_STL_PATH)

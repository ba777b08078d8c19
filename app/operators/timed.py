"""Stage timing for the SDK's operators without changing what they do.

:class:`TimedComputeMixin` wraps ``compute()`` of the operator class that follows it in the MRO and adds the
wall time to a :class:`~app.run_record.RunRecord` stage. The SDK operators the app uses as they are get a
one-line timed subclass here (they are the SDK's operators, not new ones, hence one module).
"""

from __future__ import annotations

from typing import Any

from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from monai.deploy.operators.monai_bundle_inference_operator import MonaiBundleInferenceOperator

from ..run_record import RunRecord


class TimedComputeMixin:
    """Put first in the bases; pass ``record=`` (RunRecord) and ``stage=`` (name) to the constructor."""

    def __init__(self, fragment: Any, *args: Any, record: RunRecord, stage: str, **kwargs: Any) -> None:
        self._record = record
        self._stage = stage
        super().__init__(fragment, *args, **kwargs)  # type: ignore[call-arg]

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        with self._record.stage(self._stage):
            super().compute(op_input, op_output, context)  # type: ignore[misc]


class TimedDICOMDataLoaderOperator(TimedComputeMixin, DICOMDataLoaderOperator):
    """SDK DICOMDataLoaderOperator (folder of DICOM files -> ``dicom_study_list``), timed."""


class TimedDICOMSeriesToVolumeOperator(TimedComputeMixin, DICOMSeriesToVolumeOperator):
    """SDK DICOMSeriesToVolumeOperator (``study_selected_series_list`` -> ``image``, DHW), timed."""


class TimedMonaiBundleInferenceOperator(TimedComputeMixin, MonaiBundleInferenceOperator):
    """SDK MonaiBundleInferenceOperator (``image`` -> ``pred``), timed."""

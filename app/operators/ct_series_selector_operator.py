"""CTSeriesSelectorOperator: the SDK's DICOMSeriesSelectorOperator with the spleen app's CT rules.

``source`` (constructor) names the input in error messages, e.g. "image set <id> in datastore <id>".

The SDK's JSON rule engine matches CT series (:data:`app.selection.CT_SELECTION_RULES`, all matches, largest
first); :func:`app.selection.choose_series` then applies the rest of the application's rules (no localizer,
grayscale, axial, enough slices) and keeps the largest usable series, or raises a specific
:class:`~app.errors.SeriesSelectionError` (HTTP 422) instead of letting an empty selection crash the next
operator.

Named input:
    dicom_study_list: list of ``DICOMStudy``.
Named output:
    study_selected_series_list: ``[StudySelectedSeries]`` holding exactly one selected series.
"""

from __future__ import annotations

from typing import Any

from monai.deploy.core import Fragment
from monai.deploy.core.domain.dicom_series_selection import StudySelectedSeries
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

from ..run_record import STAGE_SELECT, RunRecord
from ..selection import CT_SELECTION_RULES, choose_series


class CTSeriesSelectorOperator(DICOMSeriesSelectorOperator):
    """Selects the one CT series to segment (see the module doc)."""

    INPUT_STUDY_LIST = "dicom_study_list"
    OUTPUT_SELECTED_SERIES = "study_selected_series_list"

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        source: str = "the input",
        record: RunRecord | None = None,
        **kwargs: Any,
    ) -> None:
        self._source = source
        self._record = record if record is not None else RunRecord()
        super().__init__(
            fragment,
            *args,
            rules=CT_SELECTION_RULES,
            all_matched=True,
            sort_by_sop_instance_count=True,
            **kwargs,
        )

    def filter(
        self,
        selection_rules: Any,
        dicom_study_list: Any,
        all_matched: bool = True,
        sort_by_sop_instance_count: bool = True,
    ) -> list[StudySelectedSeries]:
        matched = super().filter(selection_rules, dicom_study_list, all_matched, sort_by_sop_instance_count)
        return choose_series(dicom_study_list or [], matched, source=self._source)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        with self._record.stage(STAGE_SELECT):
            super().compute(op_input, op_output, context)

"""AHIDataLoaderOperator: an AWS HealthImaging image set (or study) -> the SDK's ``dicom_study_list``.

The operator emits exactly what the SDK's ``DICOMDataLoaderOperator`` emits for the same instances read from
P10 files (a list of ``DICOMStudy`` holding ``DICOMSeries`` of ``DICOMSOPInstance`` wrapping pydicom Datasets,
with the same study/series attributes), so the rest of the chain is unchanged. The Datasets come from
``ahi_connector.ImageSetExporter`` (frames fetched and decoded in memory); nothing is written to disk.

The logic lives in plain functions (:func:`studies_from_datasets`, :func:`load_ahi_studies`); ``compute()``
only receives, calls and emits.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.core.domain.dicom_study import DICOMStudy
from pydicom.dataset import Dataset
from pydicom.valuerep import IS

from ahi_connector.dicomize import make_dataset
from ahi_connector.errors import DicomizeError

from ..errors import InputNotFoundError, RequestError, SeriesSelectionError
from ..request import SegRequest
from ..run_record import STAGE_FETCH, STAGE_METADATA, RunRecord
from ..selection import choose_series

if TYPE_CHECKING:
    from ahi_connector.exporter import ImageSetExporter

logger = logging.getLogger(__name__)

#: Media Storage Directory (DICOMDIR) instances are skipped, as the SDK loader does.
SOP_CLASSES_TO_IGNORE = ("1.2.840.10008.1.3.10",)
#: Study-level attributes copied onto DICOMStudy (the SDK loader's set).
STUDY_ATTRIBUTES = ("StudyID", "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber")
#: Series-level attributes copied onto DICOMSeries (the SDK loader's set, besides spacing and orientation).
#: BodyPartExamined is read from its tag (0018,0015); the SDK 4.0 loader reads (0008,0015) and never sets it.
SERIES_ATTRIBUTES = (
    "SeriesDate",
    "SeriesTime",
    "Modality",
    "SeriesDescription",
    "BodyPartExamined",
    "PatientPosition",
    "Laterality",
)


def _populate_study(study: DICOMStudy, ds: Dataset) -> None:
    for keyword in STUDY_ATTRIBUTES:
        if keyword in ds:
            setattr(study, keyword, ds[keyword].value)


def _populate_series(series: DICOMSeries, ds: Dataset) -> None:
    for keyword in SERIES_ATTRIBUTES:
        if keyword in ds:
            setattr(series, keyword, ds[keyword].value)
    if "SeriesNumber" in ds and ds.SeriesNumber is not None:
        number = ds.SeriesNumber
        series.SeriesNumber = number.real if isinstance(number, IS) else int(number)
    spacing = ds.get("PixelSpacing", None) or ds.get("ImagerPixelSpacing", None)
    if spacing is not None:
        series.row_pixel_spacing = spacing[0]
        series.col_pixel_spacing = spacing[1]
    if "ImageOrientationPatient" in ds and ds.ImageOrientationPatient is not None:
        cosines = [float(v) for v in ds.ImageOrientationPatient]
        series.row_direction_cosine = cosines[0:3]
        series.col_direction_cosine = cosines[3:6]


def _acquisition_number(ds: Dataset) -> int:
    value = ds.get("AcquisitionNumber", None)
    return -1 if value is None or value == "" else int(value)


def _keep_instance(kept: dict[Any, Dataset], ds: Dataset) -> None:
    """Keep one instance per ImagePositionPatient (the highest AcquisitionNumber wins), as the SDK loader
    does."""
    ipp = ds.get("ImagePositionPatient", None)
    if ipp is None:
        kept[("no-ipp", str(ds.SOPInstanceUID))] = ds
        return
    key = tuple(float(v) for v in ipp)
    existing = kept.get(key)
    if existing is None:
        kept[key] = ds
        return
    if _acquisition_number(ds) > _acquisition_number(existing):
        kept[key] = ds
    logger.info(
        "duplicate ImagePositionPatient %s in series %s: kept the instance with the higher AcquisitionNumber",
        key,
        ds.SeriesInstanceUID,
    )


def studies_from_datasets(datasets: Iterable[Dataset]) -> list[DICOMStudy]:
    """Group pydicom Datasets into the SDK's ``DICOMStudy``/``DICOMSeries``/``DICOMSOPInstance`` objects.

    Same grouping and attributes as ``DICOMDataLoaderOperator``: study and series keyed by their UIDs (as
    str), attributes from the first instance seen, DICOMDIR instances skipped, one instance per
    ImagePositionPatient. Instances without SOPInstanceUID / SOPClassUID / StudyInstanceUID /
    SeriesInstanceUID are skipped with a warning.
    """
    studies: dict[str, DICOMStudy] = {}
    series_by_uid: dict[str, DICOMSeries] = {}
    kept: dict[str, dict[Any, Dataset]] = {}
    for ds in datasets:
        missing = [
            k
            for k in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")
            if k not in ds
        ]
        if missing:
            logger.warning(
                "instance %s ignored: missing %s", ds.get("SOPInstanceUID", "?"), ", ".join(missing)
            )
            continue
        if str(ds.SOPClassUID) in SOP_CLASSES_TO_IGNORE:
            logger.warning("instance %s ignored: SOP class %s", ds.SOPInstanceUID, ds.SOPClassUID)
            continue
        study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        if study_uid not in studies:
            studies[study_uid] = DICOMStudy(study_uid)
            _populate_study(studies[study_uid], ds)
        if series_uid not in series_by_uid:
            series = DICOMSeries(series_uid)
            _populate_series(series, ds)
            series_by_uid[series_uid] = series
            studies[study_uid].add_series(series)
        _keep_instance(kept.setdefault(series_uid, {}), ds)
    for series_uid, instances in kept.items():
        for ds in instances.values():
            series_by_uid[series_uid].add_sop_instance(ds)
    return list(studies.values())


def header_datasets(
    exporter: ImageSetExporter,
    datastore_id: str,
    image_set_id: str,
    unreadable: dict[str, tuple[str | None, DicomizeError]] | None = None,
) -> list[Dataset]:
    """Attribute-only Datasets (no pixel data, no frame fetched) of every instance of an image set.

    With ``unreadable`` given, a series whose metadata cannot be made into Datasets (DicomizeError: a value
    that is not valid for its VR) is left out and recorded there as ``{series UID: (Modality, error)}``
    instead of failing the whole image set; without it the error propagates.
    """
    meta = exporter.get_metadata(datastore_id, image_set_id)
    out: list[Dataset] = []
    for series in meta.series.values():
        try:
            out += [make_dataset(meta, inst) for inst in series.instances]
        except DicomizeError as exc:
            if unreadable is None:
                raise
            unreadable[series.series_uid] = (series.modality, exc)
            logger.warning(
                "series %s (%s) of image set %s left out of series selection: %s",
                series.series_uid,
                series.modality,
                image_set_id,
                exc,
            )
    return out


def _image_set_ids_for_study(exporter: ImageSetExporter, datastore_id: str, study_uid: str) -> list[str]:
    ids = list(exporter.find_image_sets_for_study(datastore_id, study_uid))
    if not ids:
        raise InputNotFoundError(
            f"no image set in datastore {datastore_id} holds study {study_uid}; "
            "check the StudyInstanceUID and that the import job finished"
        )
    return ids


def select_series(
    exporter: ImageSetExporter,
    datastore_id: str,
    image_set_ids: list[str],
    study_uid: str | None,
    source: str,
) -> tuple[str, str]:
    """Pick the (image set ID, series UID) to segment among ``image_set_ids`` (only instances of
    ``study_uid`` when given): the selection rules on header-only Datasets, no frame fetched.

    A series whose metadata cannot be read (DicomizeError) is left out, so one bad non-CT series (a report,
    a SEG, a vendor's private object) does not stop the CT series from being segmented. When no series can
    be segmented and an unreadable series is a CT series, its DicomizeError (422, naming instance and tag)
    is raised: it is the reason.
    """
    image_set_of_series: dict[str, str] = {}
    headers: list[Dataset] = []
    unreadable: dict[str, tuple[str | None, DicomizeError]] = {}
    for image_set_id in image_set_ids:
        for ds in header_datasets(exporter, datastore_id, image_set_id, unreadable):
            if study_uid is not None and str(ds.get("StudyInstanceUID", "")) != study_uid:
                continue
            image_set_of_series.setdefault(str(ds.SeriesInstanceUID), image_set_id)
            headers.append(ds)
    try:
        if not headers and unreadable:
            raise InputNotFoundError(f"no readable DICOM series in {source}")
        selected = choose_series(studies_from_datasets(headers), source=source)
    except (SeriesSelectionError, InputNotFoundError):
        for modality, exc in unreadable.values():
            if str(modality or "").strip().upper() == "CT" or not headers:
                raise exc from None
        raise
    series_uid = str(selected[0].selected_series[0].series.SeriesInstanceUID)
    return image_set_of_series[series_uid], series_uid


def resolve_study(exporter: ImageSetExporter, datastore_id: str, study_uid: str) -> tuple[str, str]:
    """Pick the (image set ID, series UID) to segment for an AHI study: the selection rules across its image
    sets (:func:`select_series`), so a study request and an image set request select the same way."""
    ids = _image_set_ids_for_study(exporter, datastore_id, study_uid)
    return select_series(
        exporter, datastore_id, ids, study_uid, f"study {study_uid} in datastore {datastore_id}"
    )


def load_ahi_studies(
    exporter: ImageSetExporter,
    request: SegRequest,
    record: RunRecord | None = None,
    *,
    with_pixels: bool = True,
) -> list[DICOMStudy]:
    """The request's instances grouped like the SDK loader: with their pixels (fetched and decoded by the
    connector), or ``with_pixels=False`` attribute-only (metadata only, no frame fetched; the selector then
    chooses from them and :class:`~app.operators.ahi_series_to_volume_operator.AHISeriesToVolumeOperator`
    fetches the chosen series' frames only).

    Both request kinds load only the series the selection rules choose on the metadata
    (:func:`select_series`: an image set request among the image set's series, a study request among all its
    image sets), so a bad series that is not segmented is never fetched and cannot fail the run.
    ``record`` (if given) gets the datastore and image set IDs, and the frames fetched, frame retries and
    throttled responses of this request.
    """
    if not request.is_ahi or request.datastore_id is None:
        raise RequestError(f"{request.describe()} is not an AWS HealthImaging request")
    datastore_id = request.datastore_id
    with record.fetching(exporter) if record is not None else contextlib.nullcontext():
        if request.image_set_id is not None:
            image_set_id, series_uid = select_series(
                exporter, datastore_id, [request.image_set_id], None, request.describe()
            )
        else:
            assert request.study_instance_uid is not None
            image_set_id, series_uid = resolve_study(exporter, datastore_id, request.study_instance_uid)
        logger.info(
            "loading image set %s (series %s) from datastore %s",
            image_set_id,
            series_uid or "all",
            datastore_id,
        )
        if with_pixels:
            datasets = exporter.to_datasets(datastore_id, image_set_id, series_uid=series_uid)
        else:
            meta = exporter.get_metadata(datastore_id, image_set_id)
            datasets = [make_dataset(meta, inst) for inst in meta.iter_instances(series_uid)]
    if record is not None:
        record.datastore_id = datastore_id
        record.image_set_ids = [image_set_id]
    studies = studies_from_datasets(datasets)
    if not studies:
        raise InputNotFoundError(
            f"image set {image_set_id} in datastore {datastore_id} holds no DICOM instances"
        )
    return studies


class AHIDataLoaderOperator(Operator):
    """Loads the DICOM instances of an AWS HealthImaging request into memory.

    Named input:
        input_file (optional, no sender required): path of a JSON request file; overrides the constructor
        request.

    Named output:
        dicom_study_list: list of ``DICOMStudy`` (as emitted by the SDK's ``DICOMDataLoaderOperator``).

    Constructor: ``exporter`` (``ahi_connector.ImageSetExporter``), and ``request``
    (:class:`~app.request.SegRequest`) or ``input_file`` (JSON ``{"datastoreId", "imageSetId"}`` or
    ``{"datastoreId", "studyInstanceUid"}``); ``with_pixels`` (default True: the SDK-compatible ``DICOMStudy``
    list with pixel data; False: attribute-only instances for the direct volume path, see
    :func:`load_ahi_studies`). Needs ``CountCondition(fragment, 1)`` to run once per application run.
    """

    INPUT_FILE = "input_file"
    OUTPUT_STUDY_LIST = "dicom_study_list"

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        exporter: ImageSetExporter,
        request: SegRequest | None = None,
        input_file: Path | None = None,
        record: RunRecord | None = None,
        with_pixels: bool = True,
        **kwargs: Any,
    ) -> None:
        self._exporter = exporter
        self._with_pixels = with_pixels
        self._request = request
        self._input_file = Path(input_file) if input_file else None
        self._record = record if record is not None else RunRecord()
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_FILE).condition(ConditionType.NONE)
        spec.output(self.OUTPUT_STUDY_LIST)

    def _resolve_request(self, port_value: Any) -> SegRequest:
        if port_value:
            return SegRequest.from_file(Path(port_value))
        if self._request is not None:
            return self._request
        if self._input_file is not None:
            return SegRequest.from_file(self._input_file)
        raise RequestError("AHIDataLoaderOperator needs a request or an input JSON file; got neither")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        port_value = op_input.receive(self.INPUT_FILE)
        with self._record.stage(STAGE_FETCH if self._with_pixels else STAGE_METADATA):
            request = self._resolve_request(port_value)
            studies = load_ahi_studies(self._exporter, request, self._record, with_pixels=self._with_pixels)
        op_output.emit(studies, self.OUTPUT_STUDY_LIST)

"""AISpleenSegApp: spleen CT segmentation as a MONAI Deploy (App SDK 4, holoscan) application.

Operator graph (``source port -> target port``)::

    loader              dicom_study_list           -> series_selector   dicom_study_list
    series_selector     study_selected_series_list -> series_to_volume, seg_writer, report, spleen_stl,
                                                      spleen_preview
    series_to_volume    image                      -> spleen_bundle_inference, spleen_mask, spleen_preview
    spleen_bundle_inf.  pred                       -> spleen_mask       pred
    spleen_mask         spleen_mask                -> seg_writer (seg_image), report, spleen_stl,
                                                      spleen_preview
    seg_writer          seg_path                   -> report            seg_path
    spleen_preview      preview_path               -> report            preview_path
    spleen_stl          stl_path                   -> report            stl_path      (only when STL is on)

``loader`` is AHIDataLoaderOperator for an AHI request, or the SDK's DICOMDataLoaderOperator for a DICOM
folder. For an AHI request the loader emits attribute-only instances (metadata, no frame fetched) and the
volume operator is AHISeriesToVolumeOperator (the SDK's operator fetching only the selected series' frames
straight into the Image); ``RunConfig.ahi_direct_volume=False`` restores the SDK-compatible path (instances
with pixel data). Otherwise the volume operator is the SDK's DICOMSeriesToVolumeOperator. The inference
operator is the SDK's MonaiBundleInferenceOperator (``image`` -> ``pred``, bundle configs ``inference``), both
timed by :mod:`app.operators.timed`. Same app for both inputs: only the loader differs.

One application object serves many runs: :meth:`AISpleenSegApp.configure` sets the next run's
:class:`RunConfig`, then ``run()``. holoscan composes the graph again on every ``run()`` (new operator
instances), so the model is **not** held by an operator: it lives in the AppContext's
:class:`~app.bundle_model.BundleModel`, loaded once (see that module).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Image, IOType
from monai.deploy.operators.monai_bundle_inference_operator import BundleConfigNames, IOMapping

from .bundle_model import MODEL_NAME, BundleModel
from .errors import RequestError
from .operators.ahi_data_loader_operator import AHIDataLoaderOperator
from .operators.ahi_series_to_volume_operator import AHISeriesToVolumeOperator
from .operators.ct_series_selector_operator import CTSeriesSelectorOperator
from .operators.report_operator import ReportOperator
from .operators.spleen_mask_operator import SpleenMaskOperator
from .operators.spleen_preview_operator import SpleenPreviewOperator
from .operators.spleen_seg_writer_operator import SpleenSegWriterOperator
from .operators.spleen_stl_operator import SpleenSTLOperator
from .operators.timed import (
    TimedDICOMDataLoaderOperator,
    TimedDICOMSeriesToVolumeOperator,
    TimedMonaiBundleInferenceOperator,
)
from .request import SegRequest
from .run_record import STAGE_FETCH, STAGE_INFERENCE, STAGE_VOLUME, RunRecord

if TYPE_CHECKING:
    from ahi_connector.exporter import ImageSetExporter

logger = logging.getLogger(__name__)

SEG_DIR = "seg"
STL_FILE = Path("stl") / "spleen.stl"
REPORT_FILE = "report.json"
PREVIEW_FILE = "preview.png"
#: argv for holoscan's Application when the app is driven in-process (argv[0] must be the interpreter).
IN_PROCESS_ARGV = [sys.executable, "ai_spleen_seg_app"]


@dataclass
class RunConfig:
    """Everything one run needs. ``exporter`` (``ahi_connector.ImageSetExporter``) is required for AHI
    requests."""

    request: SegRequest
    output_dir: Path
    model: BundleModel
    app_context: AppContext
    exporter: ImageSetExporter | None = None
    write_stl: bool = True
    record: RunRecord = field(default_factory=RunRecord)
    #: AHI requests: select from metadata, then fetch only the chosen series straight into the SDK Image
    #: (AHISeriesToVolumeOperator). False: the SDK-compatible path (every instance with pixels, then the
    #: SDK's DICOMSeriesToVolumeOperator).
    ahi_direct_volume: bool = True
    #: False when the caller writes ``report.json`` itself (the service adds the total time first).
    write_report_file: bool = True

    @property
    def direct_volume(self) -> bool:
        return self.ahi_direct_volume and self.request.dicom_folder is None

    @property
    def seg_dir(self) -> Path:
        return self.output_dir / SEG_DIR

    @property
    def stl_path(self) -> Path:
        return self.output_dir / STL_FILE

    @property
    def preview_path(self) -> Path:
        return self.output_dir / PREVIEW_FILE

    @property
    def report_path(self) -> Path:
        return self.output_dir / REPORT_FILE


def _loader(app: Application, run: RunConfig) -> Any:
    """The input operator for the run's request (AHI request or DICOM folder); both emit
    ``dicom_study_list``."""
    once = CountCondition(app, 1)
    if run.request.dicom_folder is not None:
        # must_load=False: an empty folder reaches the selector: InputNotFoundError (404) naming the folder.
        return TimedDICOMDataLoaderOperator(
            app,
            once,
            input_folder=run.request.dicom_folder,
            must_load=False,
            record=run.record,
            stage=STAGE_FETCH,
            name="loader",
        )
    if run.exporter is None:
        raise RequestError(f"{run.request.describe()}: no AWS HealthImaging connection configured")
    return AHIDataLoaderOperator(
        app,
        once,
        exporter=run.exporter,
        request=run.request,
        record=run.record,
        with_pixels=not run.direct_volume,
        name="loader",
    )


def _volume(app: Application, run: RunConfig) -> Any:
    """The volume operator: the SDK's (timed), or for AHI requests the direct one (frames of the selected
    series only, same Image)."""
    if run.direct_volume and run.exporter is not None:
        return AHISeriesToVolumeOperator(
            app, exporter=run.exporter, record=run.record, name="series_to_volume"
        )
    return TimedDICOMSeriesToVolumeOperator(
        app, record=run.record, stage=STAGE_VOLUME, name="series_to_volume"
    )


class AISpleenSegApp(Application):
    """Spleen segmentation of the CT series of a DICOM input; writes a DICOM SEG, an STL, a preview PNG and a
    JSON report.

    Driven in-process by :class:`app.service.SpleenSegService` (``configure()`` then ``run()``), or from the
    command line by ``python -m app -i INPUT -o OUTPUT -m MODEL`` (:mod:`app.__main__`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._run_config: RunConfig | None = None

    def configure(self, run: RunConfig) -> AISpleenSegApp:
        """Set what the next ``run()`` processes."""
        self._run_config = run
        return self

    def compose(self) -> None:
        run = self._run_config
        if run is None:
            raise RequestError("AISpleenSegApp.configure(RunConfig) must be called before run()")
        identity = run.model.identity
        loader = _loader(self, run)
        selector = CTSeriesSelectorOperator(
            self, source=run.request.describe(), record=run.record, name="series_selector"
        )
        volume = _volume(self, run)
        inference = TimedMonaiBundleInferenceOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            app_context=run.app_context,
            model_name=MODEL_NAME,
            bundle_config_names=BundleConfigNames(config_names=["inference"]),
            bundle_path=identity.bundle_dir,
            record=run.record,
            stage=STAGE_INFERENCE,
            name="spleen_bundle_inference",
        )
        mask = SpleenMaskOperator(
            self, spleen_label=identity.spleen_label, record=run.record, name="spleen_mask"
        )
        seg_writer = SpleenSegWriterOperator(
            self, model=identity, output_folder=run.seg_dir, record=run.record, name="seg_writer"
        )
        report = ReportOperator(
            self,
            output_file=run.report_path if run.write_report_file else None,
            model=identity,
            request=run.request,
            with_stl=run.write_stl,
            record=run.record,
            name="report",
        )
        preview = SpleenPreviewOperator(
            self, output_file=run.preview_path, model=identity, record=run.record, name="spleen_preview"
        )
        series_list = ("study_selected_series_list", "study_selected_series_list")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, volume, {series_list})
        self.add_flow(volume, inference, {("image", "image")})
        self.add_flow(volume, mask, {("image", "image")})
        self.add_flow(inference, mask, {("pred", "pred")})
        self.add_flow(mask, seg_writer, {("spleen_mask", "seg_image")})
        self.add_flow(selector, seg_writer, {series_list})
        self.add_flow(mask, report, {("spleen_mask", "spleen_mask")})
        self.add_flow(selector, report, {series_list})
        self.add_flow(seg_writer, report, {("seg_path", "seg_path")})
        self.add_flow(volume, preview, {("image", "image")})
        self.add_flow(mask, preview, {("spleen_mask", "spleen_mask")})
        self.add_flow(selector, preview, {series_list})
        self.add_flow(preview, report, {("preview_path", "preview_path")})
        if run.write_stl:
            stl = SpleenSTLOperator(self, output_file=run.stl_path, record=run.record, name="spleen_stl")
            self.add_flow(mask, stl, {("spleen_mask", "spleen_mask")})
            self.add_flow(selector, stl, {series_list})
            self.add_flow(stl, report, {("stl_path", "stl_path")})

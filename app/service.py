"""SpleenSegService: the one reusable entry to the spleen app (container handler and code/inference.py call
it).

::

    from app.service import SpleenSegService, SegRequest, SegResult
    svc = SpleenSegService(bundle_path)            # once per model / worker: loads the model, imports the SDK
    req = SegRequest.from_json(obj)                # validates; raises app.errors.RequestError (http_status
    400)
    res = svc.run(req, work_dir)                   # SegResult(report: dict, seg_path: Path, stl_path: Path
    | None)

The service builds the model (:class:`~app.bundle_model.BundleModel`), one SDK AppContext and one
:class:`~app.app.AISpleenSegApp` once; each ``run()`` configures and runs that same application (holoscan
re-composes the graph; the loaded network is reused). Runs are serialised by a lock (one holoscan graph at a
time per app).

AHI access: ``exporter`` (an ``ahi_connector.ImageSetExporter``), or ``ahi_client``, or ``endpoint_url``; by
default the standard boto3 chain (``AWS_ENDPOINT_URL_MEDICAL_IMAGING``,
``AWS_DISABLE_HOST_PREFIX_INJECTION``...), created on the first AHI request. ``ahi_direct_volume`` (default
True) selects the series from metadata and fetches only its frames straight into the SDK Image; False keeps
the SDK-compatible path (every instance with pixel data, then the SDK's volume operator). Both give the same
SEG.

Errors: :class:`app.errors.AppError` subclasses and the connector's ``AHIError`` tree carry ``http_status``;
they propagate unchanged so the caller can answer with that status.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .app import IN_PROCESS_ARGV, AISpleenSegApp, RunConfig
from .bundle_model import BundleModel, ModelIdentity, make_app_context
from .errors import AppError, RequestError
from .request import SegRequest
from .run_record import RunRecord

if TYPE_CHECKING:
    from ahi_connector.exporter import ImageSetExporter

logger = logging.getLogger(__name__)

__all__ = ["SegRequest", "SegResult", "SpleenSegService"]


@dataclass(frozen=True)
class SegResult:
    """Outcome of one run: the report dict (also written as ``report.json``), the SEG path, the STL path and
    the preview PNG's path."""

    report: dict[str, Any]
    seg_path: Path
    stl_path: Path | None
    preview_path: Path | None = None


def _set_holoscan_log_level(level: str) -> None:
    from holoscan.logger import LogLevel, set_log_level

    set_log_level(getattr(LogLevel, level.upper()))


def coerce_request(request: SegRequest | Mapping[str, Any] | str | bytes | os.PathLike[str]) -> SegRequest:
    """A SegRequest from a SegRequest, a request mapping / JSON text, or a DICOM folder path
    (``os.PathLike``)."""
    if isinstance(request, SegRequest):
        return request
    if isinstance(request, os.PathLike):
        return SegRequest.for_folder(request)
    if isinstance(request, (Mapping, str, bytes, bytearray)):
        return SegRequest.from_json(request)
    raise RequestError(f"unsupported request type {type(request).__name__}")


class SpleenSegService:
    """See the module doc. Build once per model (and worker process); call :meth:`run` per request."""

    def __init__(
        self,
        bundle_path: str | os.PathLike[str],
        *,
        exporter: ImageSetExporter | None = None,
        ahi_client: Any = None,
        endpoint_url: str | None = None,
        write_stl: bool = True,
        ahi_direct_volume: bool = True,
        device: str | None = None,
        holoscan_log_level: str = "WARN",
    ) -> None:
        _set_holoscan_log_level(holoscan_log_level)
        self._model = BundleModel(Path(bundle_path), device=device)
        self._app_context = make_app_context(self._model)
        self._app = AISpleenSegApp(IN_PROCESS_ARGV)
        self._exporter = exporter
        self._owns_exporter = exporter is None
        self._ahi_client = ahi_client
        self._endpoint_url = endpoint_url
        self._write_stl = write_stl
        self._ahi_direct_volume = ahi_direct_volume
        self._lock = threading.Lock()

    @property
    def model(self) -> ModelIdentity:
        return self._model.identity

    def close(self) -> None:
        """Stop the frame workers of the exporter this service created (a later AHI request restarts them)."""
        if self._exporter is not None and self._owns_exporter:
            self._exporter.close()

    def __enter__(self) -> SpleenSegService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get_exporter(self) -> Any:
        if self._exporter is None:
            from ahi_connector import ImageSetExporter, make_ahi_client

            client = self._ahi_client or make_ahi_client(endpoint_url=self._endpoint_url)
            self._exporter = ImageSetExporter(client)
        return self._exporter

    def run(
        self,
        request: SegRequest | Mapping[str, Any] | str | bytes | os.PathLike[str],
        work_dir: str | os.PathLike[str],
        *,
        write_stl: bool | None = None,
    ) -> SegResult:
        """Segment the request's CT series; write SEG (``seg/``), STL (``stl/spleen.stl``), ``preview.png``
        and ``report.json`` under ``work_dir`` (created; its ``seg/`` folder must not already hold a SEG).
        ``write_stl`` overrides the service's STL setting for this request (None: the service's, default on).
        """
        req = coerce_request(request)
        output_dir = Path(work_dir)
        if any((output_dir / "seg").glob("*.dcm")):
            raise AppError(
                f"work_dir {str(output_dir)!r} already holds a SEG; use a fresh folder per request"
            )
        output_dir.mkdir(parents=True, exist_ok=True)
        run = RunConfig(
            request=req,
            output_dir=output_dir,
            model=self._model,
            app_context=self._app_context,
            exporter=self._get_exporter() if req.is_ahi else None,
            write_stl=self._write_stl if write_stl is None else write_stl,
            record=RunRecord(),
            ahi_direct_volume=self._ahi_direct_volume,
            write_report_file=False,
        )
        with self._lock:
            start = time.perf_counter()
            logger.info("segmenting %s into %s", req.describe(), output_dir)
            try:
                self._app.configure(run).run()
            except BaseException:
                # holoscan keeps the graph of a failed run "initialized": after a failed *first* run, the
                # next run() skips initialisation and segfaults the process (or writes nothing). A fresh
                # application object starts the next run clean; the model stays loaded in the AppContext.
                self._app = AISpleenSegApp(IN_PROCESS_ARGV)
                raise
            total = time.perf_counter() - start
        record = run.record
        if record.report is None or record.seg_path is None:
            raise AppError(f"the application finished without a report for {req.describe()}")
        report = record.report
        report["timingsSeconds"]["total"] = round(total, 3)
        run.report_path.write_text(json.dumps(report, indent=2) + "\n")
        return SegResult(
            report=report,
            seg_path=record.seg_path,
            stl_path=record.stl_path,
            preview_path=record.preview_path,
        )

"""``ModelHandler``: what one MMS worker does with one model (plain class, testable without MMS).

* :meth:`initialize` (once per model and worker): find the bundle in the model directory MMS gives, build
  ``app.service.SpleenSegService`` (loads the network, imports the SDK). Pins the worker to its GPU.
* :meth:`preprocess`: request body → validated :class:`~container.payload.Invocation` (400 on a bad payload).
* :meth:`inference`: :func:`container.invocation.run_invocation` (per-request working directories).
* :meth:`handle`: the MMS entry point; sets status, content type and custom attributes on the MMS context.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from ahi_connector.s3uri import S3Uri, S3UriError
from app.untrusted import brief
from container.errors import ModelLoadError
from container.invocation import AwsClients, InvocationResult, error_body, run_invocation
from container.payload import Invocation, PayloadError, parse_invocation
from container.settings import OUTPUT_S3_URI_ENV, Settings

logger = logging.getLogger(__name__)

JSON = "application/json"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    507: "Insufficient Storage",
}


#: Share of the container's response timeout (SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS) one AHI export may use;
#: inference, SEG writing and uploads need the rest.
EXPORT_DEADLINE_SHARE = 0.5


def export_deadline_s(timeout_s: float) -> float:
    """Deadline of one AHI export inside a request: half the container's response timeout (at least 1 s)."""
    return max(1.0, timeout_s * EXPORT_DEADLINE_SHARE)


#: Share of the response timeout a request's inputs may use; the rest is kept for the response itself.
REQUEST_BUDGET_SHARE = 0.9


def request_time_budget_s(timeout_s: float) -> float:
    """Time one invocation's inputs may take: 90 % of the container's response timeout."""
    return timeout_s * REQUEST_BUDGET_SHARE


def request_body(data: list[dict[str, Any]] | None) -> bytes | None:
    """The raw body MMS hands the handler (``data[0]["body"]``; form posts land under other names)."""
    if not data:
        return None
    item = data[0]
    body = item.get("body")
    if body is None:
        body = item.get("data")
    if body is None and len(item) == 1:
        body = next(iter(item.values()))
    if isinstance(body, str):
        return body.encode()
    return bytes(body) if body is not None else None


def check_content_type(content_type: str | None) -> None:
    """Only JSON bodies are invocations (the same rule as ``code/inference.py``'s ``input_fn``)."""
    lowered = (content_type or "").lower()
    if lowered and "json" not in lowered and "octet-stream" not in lowered:
        raise PayloadError(f"Content-Type {brief(content_type)} is not supported; send application/json")


def header(headers: dict[str, Any], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered and isinstance(value, str):
            return value
    return None


class ModelHandler:
    """Serve one model (an extracted ``model.tar.gz``) with ``SpleenSegService``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self.service: Any = None
        self.model_dir: Path | None = None
        self.load_seconds: float | None = None
        self.default_output: S3Uri | None = None
        self.clients = AwsClients()  # S3 + HealthImaging clients, built once per worker

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env(detect_gpu=False)
        return self._settings

    def initialize(self, context: Any) -> None:
        """MMS entry: load the model dir MMS gives (``context.system_properties``)."""
        props = context.system_properties
        self.load(Path(props["model_dir"]), props.get("gpu_id"), getattr(context, "model_name", None))

    def load(self, model_dir: Path, gpu_id: int | None = None, model_name: str | None = None) -> None:
        """Find the bundle under ``model_dir`` and build the service; :class:`ModelLoadError` on failure."""
        started = time.perf_counter()
        if self.settings.output_s3_uri:
            try:
                self.default_output = S3Uri.parse(self.settings.output_s3_uri, OUTPUT_S3_URI_ENV)
            except S3UriError as exc:
                raise ModelLoadError(str(exc)) from exc
        if gpu_id is not None and int(gpu_id) >= 0:
            # One worker per GPU: MMS hands each worker its gpu_id; expose only that device to this process
            # (before anything initialises CUDA here).
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = _device_for(int(gpu_id), visible)
        try:
            from app.bundle import find_bundle_dir

            bundle = find_bundle_dir(model_dir)
            from ahi_connector import ImageSetExporter
            from app.service import SpleenSegService

            # The export must give up (ExportDeadlineError naming the image set and frames) well before MMS's
            # response timeout kills the worker and answers a bare "Worker died." (e.g. a frame that never
            # answers).
            exporter = ImageSetExporter(deadline_s=export_deadline_s(self.settings.timeout_s))
            self.service = SpleenSegService(bundle, exporter=exporter)
        except Exception as exc:
            raise ModelLoadError(f"cannot load model from {model_dir}: {type(exc).__name__}: {exc}") from exc
        self.model_dir = model_dir
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "model %s loaded from %s in %.2f s (gpu_id=%s)",
            model_name or model_dir,
            bundle,
            self.load_seconds,
            gpu_id,
        )

    def preprocess(self, body: bytes | None) -> Invocation:
        return parse_invocation(body, self.default_output)

    def inference(self, invocation: Invocation, request_id: str) -> InvocationResult:
        if self.service is None:
            raise ModelLoadError("model is not loaded (initialize was not called or failed)")
        return run_invocation(
            self.service,
            invocation,
            request_id,
            work_root=self.settings.request_work_root(),
            inline_limit=self.settings.inline_seg_max_bytes,
            time_budget_s=request_time_budget_s(self.settings.timeout_s),
            clients=self.clients,
        )

    def serve(self, body: bytes | None, request_id: str, content_type: str | None = None) -> InvocationResult:
        """preprocess + inference, every failure turned into a status and an error object."""
        try:
            check_content_type(content_type)
            return self.inference(self.preprocess(body), request_id)
        except Exception as exc:
            status, err = error_body(exc, request_id)
            return InvocationResult(status, {"requestId": request_id, "error": err})

    def handle(self, data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
        if data is None:  # MMS never calls a class handler without data; nothing to do
            return None
        request_id = request_id_of(context)
        headers = _request_headers(context)
        body = request_body(data)
        result = self.serve(body, request_id, header(headers, "Content-Type"))
        if result.status != 200:
            context.set_response_status(code=result.status, phrase=_REASONS.get(result.status, "Error"))
        context.set_response_content_type(0, JSON)
        attributes = header(headers, CUSTOM_ATTRIBUTES)
        echo = f"request-id={request_id}" + (f";{attributes}" if attributes else "")
        context.set_response_header(0, CUSTOM_ATTRIBUTES, echo[:1024])
        return [result.to_json()]


def _device_for(gpu_id: int, visible: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES value for MMS's ``gpu_id``: the gpu_id-th of the devices already visible."""
    devices = [d.strip() for d in (visible or "").split(",") if d.strip()]
    return devices[gpu_id] if gpu_id < len(devices) else str(gpu_id)


def request_id_of(context: Any) -> str:
    """The request ID MMS gives the request (a fresh random one when the context has none)."""
    try:
        rid = context.get_request_id(0) if context is not None else None
    except (AttributeError, TypeError, KeyError):
        rid = None
    return str(rid) if rid else uuid.uuid4().hex


def _request_headers(context: Any) -> dict[str, Any]:
    try:
        return dict(context.request_processor[0].get_request_properties())
    except (AttributeError, TypeError, IndexError):
        return {}


__all__ = ["ModelHandler", "PayloadError", "S3Uri"]

"""Entry point for SageMaker's prebuilt PyTorch inference container (``code/inference.py`` in
``model.tar.gz``).

The prebuilt container's handler service (sagemaker-inference's ``Transformer``) calls ``model_fn`` once per
worker,
then ``input_fn`` → ``predict_fn`` → ``output_fn`` per request. All four delegate to the same code as our own
multi-model container (:class:`container.handler.ModelHandler`, which runs ``app.service.SpleenSegService``):
nothing here is a second implementation.

Request body (the asynchronous endpoint's S3 input object): ``{"datastoreId": ..., "imageSetId": ...}`` (or
``studyInstanceUid``), or the container's full ``{"inputs": [...], "output": {...}}`` form. Set
``SPLEEN_OUTPUT_S3_URI`` on the model to store SEG/STL/report in S3 when the body has no ``output.s3Uri``.

Errors never escape as exceptions (the toolkit would put a stack trace in the response): a bad body is a 400,
an
unknown image set a 404, anything else a 500 with the request ID, each as a JSON error object.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from container.handler import JSON, ModelHandler
from container.invocation import InvocationResult, error_body
from container.payload import PayloadError, S3Location, parse_invocation

logger = logging.getLogger(__name__)

OUTPUT_S3_URI_ENV = "SPLEEN_OUTPUT_S3_URI"


def _request_id(context: Any) -> str:
    try:
        rid = context.get_request_id(0) if context is not None else None
    except (AttributeError, TypeError, KeyError):
        rid = None
    return str(rid) if rid else uuid.uuid4().hex


def _default_output() -> S3Location | None:
    uri = os.environ.get(OUTPUT_S3_URI_ENV, "").strip()
    return S3Location.parse(uri, OUTPUT_S3_URI_ENV) if uri else None


def model_fn(model_dir: str, context: Any = None) -> ModelHandler:
    """Load the bundle found under ``model_dir`` (the extracted archive) once per worker."""
    gpu_id = context.system_properties.get("gpu_id") if context is not None else None
    handler = ModelHandler()
    handler.load(Path(model_dir), gpu_id)
    return handler


def input_fn(input_data: Any, content_type: str, context: Any = None) -> Any:
    """Body → validated invocation, or an error result (400) that ``predict_fn`` passes through."""
    request_id = _request_id(context)
    try:
        if content_type and "json" not in content_type and "octet-stream" not in content_type:
            raise PayloadError(f"Content-Type {content_type!r} is not supported; send application/json")
        return parse_invocation(input_data, _default_output())
    except PayloadError as exc:
        status, err = error_body(exc, request_id)
        return InvocationResult(status, {"requestId": request_id, "error": err})


def predict_fn(data: Any, model: ModelHandler, context: Any = None) -> InvocationResult:
    """Run the invocation (per-request working directories, S3 outputs) with the loaded service."""
    if isinstance(data, InvocationResult):
        return data
    request_id = _request_id(context)
    try:
        return model.inference(data, request_id)
    except Exception as exc:
        status, err = error_body(exc, request_id)
        return InvocationResult(status, {"requestId": request_id, "error": err})


def output_fn(prediction: InvocationResult, accept: str, context: Any = None) -> tuple[str, str]:
    """JSON body; the HTTP status of the result is set on the model server's context."""
    if prediction.status != 200 and context is not None:
        context.set_response_status(code=prediction.status, phrase="Error")
    return prediction.to_json(), JSON

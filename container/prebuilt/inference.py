"""Entry point for SageMaker's prebuilt PyTorch inference container (``code/inference.py`` in model.tar.gz).

The prebuilt container's handler service (sagemaker-inference's ``Transformer``) calls ``model_fn`` once per
worker, then ``input_fn`` → ``predict_fn`` → ``output_fn`` per request. They delegate to the same object as
our own multi-model container, :class:`container.handler.ModelHandler` (``load`` builds
``app.service.SpleenSegService``; ``serve`` validates, runs and maps errors): nothing here is a second
implementation.

Request body (the asynchronous endpoint's S3 input object): ``{"datastoreId": ..., "imageSetId": ...}`` (or
``studyInstanceUid``), or the container's full ``{"inputs": [...], "output": {...}}`` form. Set
``SPLEEN_OUTPUT_S3_URI`` on the model to store SEG/STL/report in S3 when the body names no ``output.s3Uri``.

Errors never escape as exceptions (the toolkit would put a stack trace in the response): a bad body is a 400,
an unknown image set a 404, anything else a 500 carrying only the request ID, each as a JSON error object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from container.handler import JSON, ModelHandler, check_content_type, request_id_of
from container.invocation import InvocationResult, error_body
from container.payload import PayloadError


def model_fn(model_dir: str, context: Any = None) -> ModelHandler:
    """Load the bundle found under ``model_dir`` (the extracted archive) once per worker."""
    gpu_id = context.system_properties.get("gpu_id") if context is not None else None
    handler = ModelHandler()
    handler.load(Path(model_dir), gpu_id)
    return handler


def input_fn(input_data: Any, content_type: str, context: Any = None) -> Any:
    """The raw body (validated by ``predict_fn``), or a 400 result for an unsupported content type."""
    try:
        check_content_type(content_type)
    except PayloadError as exc:
        request_id = request_id_of(context)
        status, err = error_body(exc, request_id)
        return InvocationResult(status, {"requestId": request_id, "error": err})
    return input_data


def predict_fn(data: Any, model: ModelHandler, context: Any = None) -> InvocationResult:
    """Validate and run the request with the loaded service (per-request working dirs, S3 outputs)."""
    if isinstance(data, InvocationResult):
        return data
    body = data.encode() if isinstance(data, str) else data
    return model.serve(body, request_id_of(context))


def output_fn(prediction: InvocationResult, accept: str, context: Any = None) -> tuple[str, str]:
    """JSON body; the HTTP status of the result is set on the model server's context."""
    if prediction.status != 200 and context is not None:
        context.set_response_status(code=prediction.status, phrase="Error")
    return prediction.to_json(), JSON

"""sagemaker-runtime errors as botocore parses them (rest-json: ``x-amzn-ErrorType`` header + JSON body)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

#: Error messages are cut to this many characters (OriginalMessage, the container's body, is kept whole).
MESSAGE_LIMIT = 2000


def payload_too_large(message: str) -> RuntimeApiError:
    return RuntimeApiError("ValidationError", 413, message)


class RuntimeApiError(Exception):
    """An error the gateway returns to the caller, shaped like the SageMaker runtime's."""

    def __init__(self, code: str, status: int, message: str, **fields: Any) -> None:
        if len(message) > MESSAGE_LIMIT:
            message = message[:MESSAGE_LIMIT] + "…"
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.fields = fields

    def response(self) -> Response:
        body = {"Message": self.message, "message": self.message, **self.fields}
        return Response(
            json.dumps(body),
            status_code=self.status,
            media_type="application/json",
            headers={
                "x-amzn-ErrorType": f"{self.code}:http://internal.amazon.com/coral/com.amazon.sagemaker/"
            },
        )


def validation_error(message: str) -> RuntimeApiError:
    return RuntimeApiError("ValidationError", 400, message)


def model_error(original_status: int, original_message: str, what: str = "primary") -> RuntimeApiError:
    kind = "client" if 400 <= original_status < 500 else "server"
    message = (
        f'Received {kind} error ({original_status}) from {what} with message "{original_message[:2000]}". '
        "See the container's log (container/serve output) for more information."
    )
    return RuntimeApiError(
        "ModelError", 424, message, OriginalStatusCode=original_status, OriginalMessage=original_message
    )


def service_unavailable(message: str) -> RuntimeApiError:
    return RuntimeApiError("ServiceUnavailable", 503, message)


def bad_gateway(message: str) -> RuntimeApiError:
    """The container's answer did not arrive whole (SageMaker answers such failures as a 5xx too)."""
    return RuntimeApiError("ServiceUnavailable", 502, message)


def internal_failure(message: str) -> RuntimeApiError:
    return RuntimeApiError("InternalFailure", 500, message)

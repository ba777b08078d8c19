"""The Starlette app of ahi-local: routes, request parsing and validation derived from botocore's model.

Every operation of the ``medical-imaging`` service model gets a route from its ``http.requestUri``; request
members are read from the URI, query string and JSON body as the model's serialization says, then checked
against every constraint of the model (:mod:`devstack.ahi_local.validation`). An operation the model has but
ahi-local does not implement (a newer botocore) is routed too and answers an AWS-shaped error. Errors are
answered like AWS rest-json: ``x-amzn-ErrorType`` header and ``{"message": ...}``.

DICOMweb (WADO-RS, QIDO-RS, STOW-RS under ``/datastore/{datastoreId}/studies``) lives in
:mod:`devstack.ahi_local.dicomweb`. Non-AWS routes: ``GET /_local/health`` and ``GET|PUT /_local/faults``
(runtime fault settings).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import botocore.session
from botocore.model import OperationModel, Shape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ahi_connector.client import make_client
from app.untrusted import brief, loads
from devstack.model_validation import validation_errors, validation_message

from .dicomweb import DicomWeb
from .errors import InternalError, ServiceError, UnknownOperationError, ValidationError
from .faults import FaultInjector, FaultSettings, corrupt_bytes
from .guard import RequestGuard
from .ids import new_id
from .importer import ImportRunner
from .operations import Operations, RawResponse
from .settings import ServeSettings
from .store import Store

logger = logging.getLogger(__name__)

_ABSENT = object()


def service_model() -> Any:
    return botocore.session.get_session().get_service_model("medical-imaging")


#: Error messages are cut to this many characters (they may quote what a client sent).
MESSAGE_LIMIT = 2000


def error_response(error: ServiceError, request_id: str) -> JSONResponse:
    message = error.message if len(error.message) <= MESSAGE_LIMIT else error.message[:MESSAGE_LIMIT] + "…"
    return JSONResponse(
        {"message": message},
        status_code=error.status,
        headers={"x-amzn-ErrorType": error.code, "x-amzn-RequestId": request_id},
    )


def _query_value(shape: Shape, request: Request, wire: str) -> Any:
    if shape.type_name == "list":
        return request.query_params.getlist(wire)
    raw = request.query_params[wire]
    try:
        if shape.type_name == "integer":
            return int(raw)
        if shape.type_name == "boolean":
            return {"true": True, "false": False}[raw.lower()]
    except (ValueError, KeyError) as exc:
        raise ValidationError(
            f"query parameter {wire}={brief(raw)} is not a valid {shape.type_name}"
        ) from exc
    return raw


def _json_body(op: OperationModel, raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        body = loads(raw)
    except ValueError as exc:
        raise ValidationError(f"{op.name}: request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValidationError(f"{op.name}: request body must be a JSON object")
    return body


def _member_value(name: str, member: Shape, request: Request, body: dict[str, Any]) -> Any:
    """The member's value from where the model serialises it, or _ABSENT."""
    location = member.serialization.get("location")
    wire = member.serialization.get("name", name)
    if location == "uri":
        return request.path_params[wire]
    if location == "querystring":
        return _query_value(member, request, wire) if wire in request.query_params else _ABSENT
    if location == "header":
        return request.headers.get(wire, _ABSENT)
    return body.get(name, _ABSENT)


async def parse_params(op: OperationModel, request: Request) -> dict[str, Any]:
    """The operation's input members from the request, validated against the model."""
    shape = op.input_shape
    params: dict[str, Any] = {}
    if shape is None:
        return params
    raw = await request.body()
    body = _json_body(op, raw)
    payload = shape.serialization.get("payload")
    if payload:
        if raw:
            params[payload] = body
        body = {}
    for name, member in shape.members.items():
        if name == payload:
            continue
        value = _member_value(name, member, request, body)
        if value is not _ABSENT:
            params[name] = value
    unknown = sorted(set(body) - set(shape.members))
    if unknown:
        raise ValidationError(f"{op.name}: unknown request members {unknown}")
    errors = validation_errors(shape, params)
    if errors:
        raise ValidationError(validation_message(errors))
    return params


class LocalAHIApp:
    """Builds the Starlette app; owns the store, the import runner and the fault injector."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.store = Store(
            settings.data_dir,
            settings.lock_wait_s,
            transition_s=settings.transition_s,
            datastore_creation_s=settings.datastore_creation_s,
            region=settings.region,
            account_id=settings.account_id,
        )
        self.runner = ImportRunner(self.store, self._s3_client, settings.import_workers)
        self.operations = Operations(self.store, self.runner)
        self.faults = FaultInjector(settings.faults)
        self.model = service_model()
        routes = [
            Route("/_local/health", self.health, methods=["GET"]),
            Route("/_local/faults", self.fault_settings, methods=["GET", "PUT"]),
            *DicomWeb(self.store, self.faults).routes(),
        ]
        for name in self.model.operation_names:
            op = self.model.operation_model(name)
            path = re.sub(r"\{resourceArn\}", "{resourceArn:path}", op.http["requestUri"])
            routes.append(Route(path, self._endpoint(op), methods=[op.http["method"]], name=name))
        self.app = Starlette(
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers={404: self.not_found, 405: self.not_found},
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.runner.start()
        try:
            yield
        finally:
            self.runner.stop()

    def _s3_client(self) -> Any:
        return make_client("s3", endpoint_url=self.settings.s3_endpoint_url, max_attempts=5)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "datastores": len(self.store.datastores)})

    async def fault_settings(self, request: Request) -> Response:
        request_id = new_id()
        if not self.settings.enable_faults:
            return error_response(
                UnknownOperationError(
                    "fault injection is off; start ahi-local with --enable-faults to use /_local/faults"
                ),
                request_id,
            )
        if request.method == "PUT":
            try:
                values = loads(await request.body() or b"{}")
                if not isinstance(values, dict):
                    raise ValidationError("fault settings must be a JSON object")
                self.faults.update(FaultSettings.from_mapping(values, self.faults.settings))
            except ServiceError as exc:
                return error_response(exc, request_id)
            except ValueError as exc:
                return error_response(ValidationError(f"invalid fault settings: {exc}"), request_id)
            logger.warning("fault settings changed: %s", self.faults.settings.to_json())
        return JSONResponse(self.faults.status())

    async def not_found(self, request: Request, exc: Exception) -> Response:
        error = UnknownOperationError(f"no operation matches {request.method} {request.url.path}")
        return error_response(error, new_id())

    def _endpoint(self, op: OperationModel) -> Callable[[Request], Any]:
        handler = self.operations.handlers.get(op.name)

        async def endpoint(request: Request) -> Response:
            request_id = new_id()
            try:
                if handler is None:
                    raise UnknownOperationError(
                        f"{op.name} is in botocore's medical-imaging model but ahi-local does not "
                        "implement it"
                    )
                if self.faults.latency_s():
                    await asyncio.sleep(self.faults.latency_s())
                self.faults.check_request(op.name)
                params = await parse_params(op, request)
                if op.name == "GetImageFrame":
                    return await self._frame(params, request_id)
                result = handler(params)
            except ServiceError as exc:
                if exc.status >= 500:
                    logger.warning("%s request %s: %s", op.name, request_id, exc.message)
                return error_response(exc, request_id)
            except Exception:
                logger.exception("%s request %s failed", op.name, request_id)
                error = InternalError(
                    f"{op.name} failed unexpectedly; request ID {request_id} (see server log)"
                )
                return error_response(error, request_id)
            return self._respond(result, request_id)

        endpoint.__name__ = op.name
        return endpoint

    async def _frame(self, params: dict[str, Any], request_id: str) -> Response:
        location = self.operations.frame_location(params)
        frame_id = params["imageFrameInformation"]["imageFrameId"]
        fault = self.faults.frame_fault(frame_id)
        if fault == "fail":
            raise InternalError(f"image frame {frame_id} failed (ahi-local fault injection: fail_frames)")
        if fault == "hang":
            self.faults.record_hang(frame_id)
            logger.warning(
                "hanging GetImageFrame %s for %.0f s (fault injection)",
                frame_id,
                self.faults.settings.hang_seconds,
            )
            await asyncio.sleep(self.faults.settings.hang_seconds)
        data = location.path.read_bytes()
        if fault == "corrupt":
            data = corrupt_bytes(data)
        return Response(data, media_type=location.content_type, headers={"x-amzn-RequestId": request_id})

    @staticmethod
    def _respond(result: Any, request_id: str) -> Response:
        headers = {"x-amzn-RequestId": request_id}
        if isinstance(result, RawResponse):
            if result.content_encoding:
                headers["Content-Encoding"] = result.content_encoding
            return Response(result.body, media_type=result.content_type, headers=headers)
        return JSONResponse(result, headers=headers)


def create_app(settings: ServeSettings) -> RequestGuard:
    """The app behind :class:`~devstack.ahi_local.guard.RequestGuard` (body limit, read timeout, SigV4)."""
    credentials = dict(settings.credentials) if settings.credentials else None
    return RequestGuard(
        LocalAHIApp(settings).app,
        credentials=credentials,
        idle_timeout_s=settings.body_timeout_s,
        total_timeout_s=3 * settings.body_timeout_s,
    )

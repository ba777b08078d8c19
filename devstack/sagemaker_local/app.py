"""Starlette app implementing the two sagemaker-runtime operations boto3 sends.

* ``POST /endpoints/{EndpointName}/invocations`` (InvokeEndpoint): ``X-Amzn-SageMaker-Target-Model`` selects
  the archive; it is fetched, extracted and loaded once, then ``POST /models/{name}/invoke`` on the container.
  The container's Content-Type and ``X-Amzn-SageMaker-Custom-Attributes`` come back unchanged; a container
  error becomes ``ModelError`` (424, OriginalStatusCode/OriginalMessage) as on SageMaker.
* ``POST /endpoints/{EndpointName}/invocations-response-stream`` (InvokeEndpointWithResponseStream): the
  container (MMS, a multi-model endpoint) does not stream, so it answers SageMaker's ValidationError.
* Every request is first checked against botocore's ``sagemaker-runtime`` model (header and URI members:
  patterns, lengths, ranges; :mod:`devstack.model_validation`), then its EndpointName against the names this
  gateway serves (``--endpoint-name``): any other name is ``ValidationError`` "Endpoint X of account Y not
  found." as on SageMaker.
* ``POST /endpoints/{EndpointName}/async-invocations`` (InvokeEndpointAsync): answers 202 with InferenceId and
  OutputLocation at once; in the background reads the payload (``InputLocation`` in S3, or the inline ``Body``
  of at most 128,000 bytes: exactly one of the two), calls the container's ``/invocations`` (or a multi-model
  target) and writes ``<S3OutputPath>[/<S3OutputPathExtension>]/<Filename or id.out>`` or
  ``<S3FailurePath>[/<S3OutputPathExtension>]/<id>-error.out``. ``RequestTTLSeconds`` (default 21600) and
  ``InvocationTimeoutSeconds`` (default 900) are honoured: a request not started within its TTL, or whose
  container call outlives its timeout, goes to the failure location with the reason. An accepted request is
  journaled (one JSON file per job under ``async_queue_dir``, an inline body with it) before the 202 goes out
  and removed once its output or error object is written, so a gateway that crashes and restarts resumes
  every accepted job: like SageMaker's durable queue, nothing accepted is lost.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import botocore.session
from botocore.model import OperationModel
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ahi_connector.s3uri import S3Uri, S3UriError
from container.payload import PayloadError
from container.settings import REALTIME_PAYLOAD_LIMIT
from devstack.model_validation import validation_errors, validation_message
from devstack.sagemaker_local.errors import (
    RuntimeApiError,
    internal_failure,
    model_error,
    payload_too_large,
    validation_error,
)
from devstack.sagemaker_local.models import (
    FAILED_LOAD_CLEANUP_S,
    ContainerClient,
    HttpReply,
    ModelManager,
    ModelSource,
)

logger = logging.getLogger(__name__)

#: SageMaker real-time payload limit (the container's settings hold the one value).
MAX_PAYLOAD = REALTIME_PAYLOAD_LIMIT
H_TARGET = "X-Amzn-SageMaker-Target-Model"
H_CUSTOM = "X-Amzn-SageMaker-Custom-Attributes"
H_INPUT_LOCATION = "X-Amzn-SageMaker-InputLocation"
H_INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
FORWARD_HEADERS = ("Content-Type", "Accept", H_CUSTOM, H_TARGET, H_INFERENCE_ID)
DEFAULT_ACCOUNT_ID = "123456789012"
#: SageMaker's defaults for InvokeEndpointAsync when the request does not set them.
DEFAULT_REQUEST_TTL_S = 21600
DEFAULT_INVOCATION_TIMEOUT_S = 900
TIMEOUT_MESSAGE = (
    "Your invocation timed out while waiting for a response from container primary. Review the latency "
    "metrics for each container in Amazon CloudWatch, resolve the issue, and try again."
)
_MODEL = botocore.session.get_session().get_service_model("sagemaker-runtime")
#: InvokeEndpointAsync's inline ``Body`` (the alternative to InputLocation): 128,000 bytes in the model.
MAX_ASYNC_INLINE_BODY = int(
    _MODEL.operation_model("InvokeEndpointAsync").input_shape.members["Body"].metadata["max"]
)


def validate_request(operation: str, request: Request) -> dict[str, Any]:
    """The operation's URI and header members, checked against botocore's sagemaker-runtime model."""
    op: OperationModel = _MODEL.operation_model(operation)
    params: dict[str, Any] = {}
    for name, member in op.input_shape.members.items():
        location, wire = member.serialization.get("location"), member.serialization.get("name", name)
        if location == "uri":
            params[name] = request.path_params["name"]
        elif location == "header" and wire in request.headers:
            raw = request.headers[wire]
            if member.type_name == "integer":
                try:
                    params[name] = int(raw)
                except ValueError:
                    raise validation_error(f"{wire} must be an integer, got {raw!r}") from None
            else:
                params[name] = raw
    # The body is not among params: its size is checked where it is read (and Body is not null there).
    errors = [e for e in validation_errors(op.input_shape, params) if "at 'Body'" not in e]
    if errors:
        raise validation_error(validation_message(errors))
    return params


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    container_url: str
    model_data_url: str  # local folder or s3://bucket/prefix holding the model archives
    models_dir: Path  # where archives are extracted (/opt/ml/models on SageMaker)
    async_output: str | None = None  # S3OutputPath
    async_failure: str | None = None  # S3FailurePath (default: S3OutputPath)
    async_container_url: str | None = None  # single-model container for async; None: the MME container
    async_target_model: str = "model.tar.gz"  # used when async goes to the MME container
    endpoint_names: tuple[str, ...] = ()  # the EndpointNames served; any other is "not found" as on AWS
    account_id: str = DEFAULT_ACCOUNT_ID
    region: str = "us-east-1"
    max_loaded_models: int = 8
    async_queue_dir: Path | None = None  # journal of accepted async jobs (default: <models_dir>/.async-jobs)
    max_model_bytes: int | None = None  # largest unpacked archive (default: free disk / memory decide)
    failed_load_cleanup_s: float = FAILED_LOAD_CLEANUP_S  # a refused load's folder goes this much later
    remove_models_dir: bool = False  # the models folder is this gateway's own temporary one: remove at exit

    @property
    def queue_dir(self) -> Path:
        return self.async_queue_dir or (self.models_dir / ".async-jobs")


@dataclasses.dataclass(frozen=True)
class AsyncJob:
    """One accepted InvokeEndpointAsync request, as journaled on disk until its result object exists."""

    inference_id: str
    input_loc: S3Uri | None  # None: the request carried its payload inline (``body``)
    out: S3Uri
    fail: S3Uri
    headers: dict[str, str]
    submitted_at: float = 0.0  # epoch seconds when the 202 went out
    ttl_s: int = DEFAULT_REQUEST_TTL_S
    timeout_s: int = DEFAULT_INVOCATION_TIMEOUT_S
    body: bytes | None = None  # the inline Body (at most MAX_ASYNC_INLINE_BODY bytes)

    def to_json(self) -> dict[str, Any]:
        return {
            "InferenceId": self.inference_id,
            "InputLocation": self.input_loc.uri if self.input_loc else None,
            "Body": base64.b64encode(self.body).decode("ascii") if self.body is not None else None,
            "OutputLocation": self.out.uri,
            "FailureLocation": self.fail.uri,
            "Headers": self.headers,
            "SubmittedAt": self.submitted_at,
            "RequestTTLSeconds": self.ttl_s,
            "InvocationTimeoutSeconds": self.timeout_s,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> AsyncJob:
        return cls(
            inference_id=str(obj["InferenceId"]),
            input_loc=(
                S3Uri.parse(obj["InputLocation"], "InputLocation") if obj.get("InputLocation") else None
            ),
            body=base64.b64decode(obj["Body"]) if obj.get("Body") is not None else None,
            out=S3Uri.parse(obj["OutputLocation"], "S3OutputPath"),
            fail=S3Uri.parse(obj["FailureLocation"], "S3FailurePath"),
            headers=dict(obj.get("Headers") or {}),
            submitted_at=float(obj.get("SubmittedAt") or time.time()),
            ttl_s=int(obj.get("RequestTTLSeconds") or DEFAULT_REQUEST_TTL_S),
            timeout_s=int(obj.get("InvocationTimeoutSeconds") or DEFAULT_INVOCATION_TIMEOUT_S),
        )


class AsyncJournal:
    """Accepted async jobs on disk: written atomically before the 202, removed after the result is stored."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, inference_id: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in inference_id)
        return self.directory / f"{safe}.json"

    def add(self, job: AsyncJob) -> None:
        path = self._path(job.inference_id)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(job.to_json(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def done(self, inference_id: str) -> None:
        self._path(inference_id).unlink(missing_ok=True)

    def pending(self) -> list[AsyncJob]:
        jobs = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                jobs.append(AsyncJob.from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, KeyError, PayloadError) as exc:
                # Keep the file for inspection; never drop it silently.
                logger.error("async journal entry %s is unreadable (%s); left in place", path, exc)
        return jobs


class Gateway:
    """State behind the routes: the container client, the model manager, S3, async jobs."""

    def __init__(self, config: GatewayConfig, s3_factory: Callable[[], Any]) -> None:
        self.config = config
        self.container = ContainerClient(config.container_url)
        self._s3_factory = s3_factory
        self._s3: Any = None
        self._s3_lock = threading.Lock()
        self.models = ModelManager(
            self.container,
            ModelSource(config.model_data_url, self.s3),
            config.models_dir,
            config.max_loaded_models,
            config.max_model_bytes,
            config.failed_load_cleanup_s,
        )
        self.async_container = (
            ContainerClient(config.async_container_url) if config.async_container_url else None
        )
        self.async_jobs: dict[str, str] = {}  # inference id -> "pending" | "succeeded" | "failed"
        self.journal = AsyncJournal(config.queue_dir)

    def submit_async(self, job: AsyncJob) -> None:
        """Journal the job, then run it in the background; the entry goes once its result is stored."""
        self.journal.add(job)
        self._start_async(job)

    def resume_async(self) -> int:
        """Restart every journaled job a previous gateway accepted but did not finish."""
        jobs = self.journal.pending()
        for job in jobs:
            logger.info("resuming async inference %s accepted before a restart", job.inference_id)
            self._start_async(job)
        return len(jobs)

    def _start_async(self, job: AsyncJob) -> None:
        self.async_jobs[job.inference_id] = "pending"
        threading.Thread(
            target=self.run_async,
            args=(job,),
            daemon=True,
            name=f"async-{job.inference_id[:8]}",
        ).start()

    def s3(self) -> Any:
        with self._s3_lock:
            if self._s3 is None:
                self._s3 = self._s3_factory()
            return self._s3

    def check_endpoint(self, name: str) -> None:
        if name not in self.config.endpoint_names:
            raise validation_error(f"Endpoint {name} of account {self.config.account_id} not found.")

    def log_stream_arn(self, name: str) -> str:
        """The CloudWatch log group SageMaker names in a ModelError (``LogStreamArn``)."""
        return (
            f"arn:aws:logs:{self.config.region}:{self.config.account_id}:log-group:"
            f"/aws/sagemaker/Endpoints/{name}"
        )

    # --- InvokeEndpoint
    # -------------------------------------------------------------------------------------------
    def invoke(
        self, target: str | None, body: bytes, headers: dict[str, str], timeout_s: float | None = None
    ) -> HttpReply:
        if not target:
            raise validation_error(
                "TargetModel is required: this is a multi-model endpoint (pass TargetModel='model.tar.gz')"
            )
        name = self.models.ensure_loaded(target)
        reply = self.container.invoke(name, body, headers, timeout_s)
        if reply.status in (404, 503) and _model_gone(reply):
            # The container no longer has it (restarted / unloaded / failed workers): load again, once.
            logger.info("container lost model %s (%d); reloading", target, reply.status)
            self.models.forget(target)
            self.container.unload(name)
            name = self.models.ensure_loaded(target)
            reply = self.container.invoke(name, body, headers, timeout_s)
        return reply

    # --- InvokeEndpointAsync
    # --------------------------------------------------------------------------------------
    def run_async(self, job: AsyncJob) -> None:
        inference_id, input_loc, out, fail, headers = (
            job.inference_id,
            job.input_loc,
            job.out,
            job.fail,
            job.headers,
        )
        s3 = self.s3()
        try:
            waited = time.time() - job.submitted_at
            if waited > job.ttl_s:
                raise RuntimeApiError(
                    "ValidationError",
                    400,
                    f"Request {inference_id} expired: it was not processed within its RequestTTLSeconds "
                    f"({job.ttl_s} s; it waited {waited:.0f} s)",
                )
            if job.body is not None:
                body = job.body
            else:
                assert input_loc is not None  # a job has exactly one of the two (checked when accepted)
                body = s3.get_object(Bucket=input_loc.bucket, Key=input_loc.key)["Body"].read()
            if self.async_container is not None:
                reply = self.async_container.invocations(body, headers, job.timeout_s)
            else:
                reply = self.invoke(self.config.async_target_model, body, headers, job.timeout_s)
        except TimeoutError:
            logger.warning(
                "async inference %s outlived InvocationTimeoutSeconds=%d", inference_id, job.timeout_s
            )
            reply = HttpReply(
                424,
                json.dumps(
                    {"error": f'Received server error (0) from primary with message "{TIMEOUT_MESSAGE}"'}
                ).encode(),
                {},
            )
        except RuntimeApiError as exc:
            reply = HttpReply(exc.status, json.dumps({"error": exc.message}).encode(), {})
        except Exception as exc:
            logger.exception("async inference %s failed before reaching the container", inference_id)
            reply = HttpReply(500, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode(), {})
        ok = 200 <= reply.status < 300
        dest = out if ok else fail
        content_type = (
            reply.headers.get("content-type") or reply.headers.get("Content-Type") or "application/json"
        )
        try:
            s3.put_object(Bucket=dest.bucket, Key=dest.key, Body=reply.body, ContentType=content_type)
        except Exception:
            # Left in the journal: the next gateway start retries it, so the request is not lost.
            logger.exception("async inference %s: cannot write %s", inference_id, dest.uri)
            self.async_jobs[inference_id] = "failed"
            return
        self.journal.done(inference_id)
        self.async_jobs[inference_id] = "succeeded" if ok else "failed"
        logger.info(
            "async inference %s %s (%d) -> %s",
            inference_id,
            self.async_jobs[inference_id],
            reply.status,
            dest.uri,
        )


def _model_gone(reply: HttpReply) -> bool:
    text = reply.text()
    return "ModelNotFoundException" in text or "ServiceUnavailableException" in text


_REALTIME_ADVICE = "6 MB; use InvokeEndpointAsync, whose input object in S3 may be up to 1 GB"


def _too_large(size: str, what: str, advice: str) -> RuntimeApiError:
    return payload_too_large(
        f"Request body is {size} bytes; {what} are limited to {MAX_PAYLOAD} bytes ({advice})"
    )


async def _bounded_body(
    request: Request, what: str = "InvokeEndpoint payloads", advice: str = _REALTIME_ADVICE
) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed the runtime's 6 MB: from
    Content-Length before reading anything, else once the streamed bytes pass it (never buffering more)."""
    limit = MAX_PAYLOAD
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(declared, what, advice)
        except ValueError:
            raise validation_error(f"Content-Length {declared[:40]!r} is not a number") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit}", what, advice)
        chunks.append(chunk)
    return b"".join(chunks)


def _forward_headers(request: Request) -> dict[str, str]:
    headers = {name: request.headers[name] for name in FORWARD_HEADERS if name in request.headers}
    # boto3 sends no Content-Type unless ContentType is given: pass the body on as opaque bytes (an HTTP
    # client would otherwise label it a form, which MMS parses instead of handing it over).
    headers.setdefault("Content-Type", "application/octet-stream")
    return headers


async def _invoke_endpoint(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    name = request.path_params["name"]
    try:
        validate_request("InvokeEndpoint", request)
        gw.check_endpoint(name)
        body = await _bounded_body(request)
        headers = _forward_headers(request)
        try:
            reply = await run_in_threadpool(gw.invoke, request.headers.get(H_TARGET), body, headers)
        except TimeoutError:
            raise model_error(0, TIMEOUT_MESSAGE) from None
        if not 200 <= reply.status < 300:
            raise model_error(reply.status, reply.text())
    except RuntimeApiError as exc:
        if exc.code == "ModelError":
            exc.fields.setdefault("LogStreamArn", gw.log_stream_arn(name))
        return exc.response()
    except Exception:
        logger.exception("InvokeEndpoint failed")
        return internal_failure("the local SageMaker runtime failed; see its log").response()
    out_headers = {"x-Amzn-Invoked-Production-Variant": "AllTraffic"}
    custom = reply.headers.get(H_CUSTOM) or reply.headers.get(H_CUSTOM.lower())
    if custom:
        out_headers[H_CUSTOM] = custom
    content_type = (
        reply.headers.get("content-type") or reply.headers.get("Content-Type") or "application/json"
    )
    return Response(reply.body, status_code=200, media_type=content_type, headers=out_headers)


def _async_input(request: Request, inline: bytes) -> S3Uri | None:
    """The InputLocation, or None when the payload came inline; exactly one of the two, as on AWS."""
    value = request.headers.get(H_INPUT_LOCATION)
    if value and inline:
        raise validation_error("Body and InputLocation are mutually exclusive. Provide exactly one of them.")
    if not value:
        if not inline:
            raise validation_error(
                f"Provide exactly one of Body (inline, up to {MAX_ASYNC_INLINE_BODY} bytes) and "
                "InputLocation (the S3 URI of the input object)."
            )
        return None
    try:
        return S3Uri.parse(value, "InputLocation")
    except S3UriError as exc:
        raise validation_error(str(exc)) from exc


def _async_locations(config: GatewayConfig, params: dict[str, Any], inference_id: str) -> tuple[S3Uri, S3Uri]:
    """Output and failure objects: S3OutputPath / S3FailurePath, then S3OutputPathExtension when given, then
    Filename (default ``<InferenceId>.out``) or ``<InferenceId>-error.out``."""
    assert config.async_output is not None
    extension = [p for p in str(params.get("S3OutputPathExtension") or "").split("/") if p]
    out = S3Uri.parse(config.async_output, "S3OutputPath").child(
        *extension, str(params.get("Filename") or f"{inference_id}.out")
    )
    fail_root = config.async_failure or config.async_output
    fail = S3Uri.parse(fail_root, "S3FailurePath").child(*extension, f"{inference_id}-error.out")
    return out, fail


async def _invoke_endpoint_async(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    try:
        params = validate_request("InvokeEndpointAsync", request)
        gw.check_endpoint(request.path_params["name"])
        if not gw.config.async_output:
            raise validation_error(
                "this endpoint has no AsyncInferenceConfig (start sagemaker-local with --async-output)"
            )
        inline = await _bounded_body(request, "InvokeEndpointAsync requests", "put the payload in S3")
        if len(inline) > MAX_ASYNC_INLINE_BODY:  # the model's constraint, in AWS's words (value not echoed)
            errors = validation_errors(
                _MODEL.operation_model("InvokeEndpointAsync").input_shape, {**params, "Body": inline}
            )
            raise validation_error(validation_message(errors))
        input_loc = _async_input(request, inline)
        inference_id = request.headers.get(H_INFERENCE_ID) or str(uuid.uuid4())
        out, fail = _async_locations(gw.config, params, inference_id)
        headers = {"Content-Type": request.headers.get("X-Amzn-SageMaker-Content-Type", "application/json")}
        if "X-Amzn-SageMaker-Accept" in request.headers:
            headers["Accept"] = request.headers["X-Amzn-SageMaker-Accept"]
        if H_CUSTOM in request.headers:
            headers[H_CUSTOM] = request.headers[H_CUSTOM]
    except RuntimeApiError as exc:
        return exc.response()
    try:
        job = AsyncJob(
            inference_id,
            input_loc,
            out,
            fail,
            headers,
            submitted_at=time.time(),
            ttl_s=params.get("RequestTTLSeconds", DEFAULT_REQUEST_TTL_S),
            timeout_s=params.get("InvocationTimeoutSeconds", DEFAULT_INVOCATION_TIMEOUT_S),
            body=inline if input_loc is None else None,
        )
        gw.submit_async(job)
    except OSError:
        logger.exception("InvokeEndpointAsync: cannot journal %s", inference_id)
        return internal_failure("cannot queue the request; see the gateway log").response()
    return JSONResponse(
        {"InferenceId": inference_id},
        status_code=202,
        headers={"X-Amzn-SageMaker-OutputLocation": out.uri, "X-Amzn-SageMaker-FailureLocation": fail.uri},
    )


async def _invoke_endpoint_with_response_stream(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    name = request.path_params["name"]
    try:
        validate_request("InvokeEndpointWithResponseStream", request)
        gw.check_endpoint(name)
        raise validation_error(
            f"Endpoint {name} of account {gw.config.account_id} does not support response streaming: its "
            "container (a multi-model server) does not stream responses. Use InvokeEndpoint or "
            "InvokeEndpointAsync."
        )
    except RuntimeApiError as exc:
        return exc.response()


async def _health(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    container_ok = await run_in_threadpool(gw.container.ping)
    return JSONResponse(
        {
            "status": "ok",
            "container": container_ok,
            "loadedModels": gw.models.loaded(),
            "loadSeconds": gw.models.load_seconds,
            "asyncJobs": gw.async_jobs,
        }
    )


def create_app(config: GatewayConfig, s3_factory: Callable[[], Any]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # At shutdown, inside the server: uvicorn re-raises SIGTERM after it, so no code runs later.
            if config.remove_models_dir:
                shutil.rmtree(config.models_dir, ignore_errors=True)
                logger.info("removed the temporary models folder %s", config.models_dir)

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/endpoints/{name}/invocations", _invoke_endpoint, methods=["POST"]),
            Route("/endpoints/{name}/async-invocations", _invoke_endpoint_async, methods=["POST"]),
            Route(
                "/endpoints/{name}/invocations-response-stream",
                _invoke_endpoint_with_response_stream,
                methods=["POST"],
            ),
            Route("/_local/health", _health, methods=["GET"]),
        ],
    )
    gateway = Gateway(config, s3_factory)
    app.state.gateway = gateway
    resumed = gateway.resume_async()
    if resumed:
        logger.info("resumed %d async job(s) from %s", resumed, config.queue_dir)
    return app

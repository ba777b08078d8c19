"""Run one validated invocation with ``app.service.SpleenSegService`` and build the response (no MMS here).

Shared by the MME container's ``ModelHandler`` and ``container/prebuilt/inference.py`` (SageMaker's prebuilt
PyTorch container): each input runs in its own temporary working directory (removed afterwards, so concurrent
requests never share files), its SEG/STL/preview/report go to
``s3://<output prefix>/<request id>/<NN>-<image set or study>/``, the SEG bytes are returned inline only when
asked and when they fit the 6 MB real-time response limit, and the SEG is stored back into AHI only when
``output.writeBackToAHI`` asks for it: with STOW-RS (synchronous; the response names the new image set) or,
with ``"method": "import-job"``, staged in S3 and imported by an AHI import job.

Status: 200 when every input succeeded; otherwise the status of the first failed input (product errors carry
``http_status``; anything else is a 500 whose message only carries the request ID; the trace goes to the log).
The body always lists every input's outcome, so results of the inputs that did succeed are never lost:

* Inputs run one after another in the worker (one worker per GPU, or the configured CPU workers, serve
  requests in parallel). With a time budget (the handler gives the container's response timeout less a
  margin), an input starts only while the time left exceeds the slowest input so far; the rest are answered
  ``notStarted`` (413 ``TimeBudgetExceededError``: send them in another request) instead of the worker being
  killed at the timeout with every result lost.
* An error body stays under :data:`ERROR_BODY_LIMIT`: multi-model-server closes the connection after an error
  response with ``SO_LINGER 0``, so whatever the client has not received yet is reset away. Inline SEG bytes
  that would push an error body past it are left out; the entry names the S3 copy, or the file kept on the
  serving host (``<work root>/spleen-undelivered/<request id>/``) when there is none.
* When the output bucket cannot be written (missing, access denied), the input fails with
  ``OutputWriteError`` (400 naming the bucket and S3's reason; 502 for other S3 failures) and its result stays
  in the response: the report, and the SEG inline when it fits the inline budget (else kept as above).
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from ahi_connector.client import make_ahi_client, make_client
from ahi_connector.import_jobs import ImportJobError, read_job_output, start_import_job, wait_for_import_job
from ahi_connector.s3uri import S3Uri
from container.metrics import emit_input_metrics
from container.payload import Invocation, WriteBack
from container.settings import DEFAULT_INLINE_SEG_MAX_BYTES

logger = logging.getLogger(__name__)

SEG_NAME = "seg.dcm"
STL_NAME = "spleen.stl"
PREVIEW_NAME = "preview.png"
REPORT_NAME = "report.json"
JSON_TYPE = "application/json"
#: Per-input working directories: ``<work root>/spleen-p<worker pid>-<request id>-<NN>-<random>``.
WORK_DIR_PREFIX = "spleen-p"
_WORK_DIR_NAME = re.compile(r"^spleen-p(\d+)-")
IMPORT_POLL_TIMEOUT_S = 300.0
#: Error responses stay below this size (see the module docstring: MMS resets connections after errors).
ERROR_BODY_LIMIT = 1024 * 1024
#: Kept SEGs that could not be delivered: ``<work root>/spleen-undelivered/<request id>/<NN>-seg.dcm``.
UNDELIVERED_DIR = "spleen-undelivered"
#: Error messages are cut to this many characters.
MESSAGE_LIMIT = 2000
#: S3 error codes that mean the output location itself is wrong (the caller can fix it): answered 400.
_OUTPUT_CLIENT_CODES = {
    "NoSuchBucket",
    "AccessDenied",
    "InvalidBucketName",
    "AllAccessDisabled",
    "404",
    "403",
}


class OutputWriteError(Exception):
    """The SEG/STL/report could not be written to the output location; carries the result kept meanwhile."""

    def __init__(self, message: str, http_status: int, kept: dict[str, Any]) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.kept = kept


class TimeBudgetExceededError(Exception):
    """Inputs not started because the request's time budget would run out before they finish."""

    http_status = 413


@dataclasses.dataclass(frozen=True)
class InvocationResult:
    status: int
    body: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(self.body, default=str)


class AwsClients:
    """The S3, HealthImaging and HealthImaging DICOMweb clients of one worker, each built once on first use
    and shared by every request (boto3 clients and the DICOMweb client are thread-safe). Endpoints and
    credentials come from the standard boto3 chain (``AWS_ENDPOINT_URL_S3``,
    ``AWS_ENDPOINT_URL_MEDICAL_IMAGING`` for local endpoints; ``AHI_DICOMWEB_ENDPOINT_URL`` for DICOMweb)."""

    def __init__(self, s3: Any = None, ahi: Any = None, dicomweb: Any = None) -> None:
        self._s3 = s3
        self._ahi = ahi
        self._dicomweb = dicomweb
        self._lock = threading.Lock()

    @property
    def s3(self) -> Any:
        with self._lock:
            if self._s3 is None:
                self._s3 = make_client("s3", max_attempts=5)
            return self._s3

    @property
    def ahi(self) -> Any:
        with self._lock:
            if self._ahi is None:
                self._ahi = make_ahi_client()
            return self._ahi

    @property
    def dicomweb(self) -> Any:
        with self._lock:
            if self._dicomweb is None:
                from ahi_connector.dicomweb import DicomWebClient

                self._dicomweb = DicomWebClient()
            return self._dicomweb


def error_body(exc: BaseException, request_id: str) -> tuple[int, dict[str, Any]]:
    """(status, error object) for an exception: product errors keep status and message; others become 500."""
    status = getattr(exc, "http_status", None)
    if isinstance(status, int) and 400 <= status < 600 and not isinstance(status, bool):
        message = str(exc)
        if len(message) > MESSAGE_LIMIT:
            message = message[:MESSAGE_LIMIT] + "…"
        return status, {"type": type(exc).__name__, "message": message, "httpStatus": status}
    logger.error("request %s failed with an unexpected error", request_id, exc_info=exc)
    return 500, {
        "type": "InternalError",
        "message": f"internal error while serving request {request_id}; the endpoint's log has the details",
        "httpStatus": 500,
    }


def _input_label(raw: dict[str, Any]) -> str:
    return str(raw.get("imageSetId") or raw.get("studyInstanceUid") or "input")


def _upload(s3: Any, path: Path, loc: S3Uri, content_type: str) -> str:
    s3.upload_file(str(path), loc.bucket, loc.key, ExtraArgs={"ContentType": content_type})
    return loc.uri


def _upload_all(s3: Any, uploads: list[tuple[Path, S3Uri, str]]) -> None:
    """Upload ``(path, location, content type)`` files side by side (a boto3 client is thread-safe); every
    upload ends before the first failure, if any, is raised."""
    if len(uploads) <= 1:
        for upload in uploads:
            _upload(s3, *upload)
        return
    with cf.ThreadPoolExecutor(max_workers=len(uploads), thread_name_prefix="output-upload") as pool:
        futures = [pool.submit(_upload, s3, *upload) for upload in uploads]
    for future in futures:
        future.result()


@dataclasses.dataclass
class _Context:
    invocation: Invocation
    request_id: str
    clients: AwsClients
    inline_budget: int

    @property
    def s3(self) -> Any:
        return self.clients.s3


def _seg_entry(ctx: _Context, seg_path: Path, uploaded_to: S3Uri | None) -> dict[str, Any]:
    size = seg_path.stat().st_size
    entry: dict[str, Any] = {"sizeBytes": size, "s3Uri": uploaded_to.uri if uploaded_to else None}
    if ctx.invocation.output.inline_seg:
        encoded = (size + 2) // 3 * 4
        if encoded <= ctx.inline_budget:
            ctx.inline_budget -= encoded
            entry["base64"] = base64.b64encode(seg_path.read_bytes()).decode("ascii")
        else:
            entry["inlineOmitted"] = (
                f"SEG is {size} bytes ({encoded} base64) and the inline budget left is "
                f"{ctx.inline_budget} bytes "
                "(6 MB real-time response limit); read it from s3Uri"
                + ("" if uploaded_to is not None else " (set output.s3Uri)")
            )
    return entry


def _store_seg(ctx: _Context, wb: WriteBack, raw: dict[str, Any], seg_path: Path) -> dict[str, Any]:
    """Store the SEG with STOW-RS (StoreDICOM): synchronous, placed like an import job would place it; the
    answer names the image set (from the RetrieveURL, else SearchImageSets on the SEG's series)."""
    from ahi_connector.dicomweb import locate_image_sets, require_stored

    datastore = wb.datastore_id or raw["datastoreId"]
    result = require_stored(
        ctx.clients.dicomweb.store_instances(datastore, [seg_path.read_bytes()]), seg_path
    )
    stored = result.stored[0]
    ids = result.image_set_ids or locate_image_sets(ctx.clients.ahi, datastore, seg_path)
    return {
        "method": "stow-rs",
        "datastoreId": datastore,
        "status": result.status,
        "sopInstanceUid": stored.sop_instance_uid,
        "retrieveUrl": stored.retrieve_url,
        "imageSetIds": ids,
    }


def _write_back(
    ctx: _Context, wb: WriteBack, raw: dict[str, Any], seg_path: Path, loc: S3Uri | None
) -> dict[str, Any]:
    """Store the SEG in AHI: STOW-RS, or (``import-job``) StartDICOMImportJob, waited for if asked."""
    if wb.method == "stow-rs":
        return _store_seg(ctx, wb, raw, seg_path)
    assert loc is not None and wb.role_arn, "payload validation requires s3Uri and a role for import-job"
    datastore = wb.datastore_id or raw["datastoreId"]
    staged = loc.child("ahi-import", "input")
    out = loc.child("ahi-import", "output")
    _upload(ctx.s3, seg_path, staged.child(SEG_NAME), "application/dicom")
    ahi = ctx.clients.ahi
    job_id = start_import_job(
        ahi,
        datastore,
        staged.uri + "/",
        out.uri + "/",
        wb.role_arn,
        job_name=f"spleen-seg-{ctx.request_id[:18]}",
        client_token=uuid.uuid5(uuid.NAMESPACE_URL, staged.uri).hex,
    )
    entry: dict[str, Any] = {
        "method": "import-job",
        "datastoreId": datastore,
        "jobId": job_id,
        "jobStatus": "SUBMITTED",
        "inputS3Uri": staged.uri + "/",
        "outputS3Uri": out.uri + "/",
    }
    if wb.wait:
        entry.update(_wait_import(ctx, datastore, job_id, out))
    return entry


def _wait_import(ctx: _Context, datastore: str, job_id: str, out: S3Uri) -> dict[str, Any]:
    try:
        props = wait_for_import_job(
            ctx.clients.ahi, datastore, job_id, IMPORT_POLL_TIMEOUT_S, max_interval_s=2.0
        )
    except ImportJobError as exc:
        return {"jobStatus": "IN_PROGRESS", "message": str(exc)}
    result: dict[str, Any] = {"jobStatus": props["jobStatus"]}
    if props["jobStatus"] == "COMPLETED":
        result["imageSetIds"] = read_job_output(ctx.s3, out.uri, datastore, job_id).image_set_ids
    else:
        result["message"] = props.get("message", "import job failed; see its FAILURE/failure.ndjson")
    return result


def _public_report(
    report: dict[str, Any], seg_uri: str | None, stl_uri: str | None, preview_uri: str | None = None
) -> dict[str, Any]:
    """The report without paths of the (deleted) working directory: S3 URIs where stored, else None."""
    out = dict(report)
    if isinstance(out.get("seg"), dict):
        out["seg"] = {**out["seg"], "path": seg_uri}
    if "stlPath" in out:
        out["stlPath"] = stl_uri
    if "previewPath" in out:
        out["previewPath"] = preview_uri
    return out


def _s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError (also one wrapped by boto3's S3UploadFailedError)."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code"):
            return str(response["Error"]["Code"])
        seen = seen.__cause__ or seen.__context__
    return None


def _is_storage_error(exc: BaseException) -> bool:
    import boto3.exceptions
    import botocore.exceptions

    return isinstance(
        exc, (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, boto3.exceptions.Boto3Error)
    )


def _keep_seg(ctx: _Context, index: int, seg_path: Path, work_root: Path | None) -> dict[str, Any]:
    """The SEG of an input whose output could not be delivered: inline when it fits, else kept on disk."""
    size = seg_path.stat().st_size
    encoded = (size + 2) // 3 * 4
    if encoded <= ctx.inline_budget:
        ctx.inline_budget -= encoded
        return {"sizeBytes": size, "s3Uri": None, "base64": base64.b64encode(seg_path.read_bytes()).decode()}
    kept = _undelivered_path(work_root, ctx.request_id, index)
    shutil.copyfile(seg_path, kept)
    return {"sizeBytes": size, "s3Uri": None, "keptAt": str(kept)}


def _undelivered_path(work_root: Path | None, request_id: str, index: int) -> Path:
    folder = (work_root or Path(tempfile.gettempdir())) / UNDELIVERED_DIR / request_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{index:02d}-{SEG_NAME}"


def _one_input(
    ctx: _Context,
    service: Any,
    index: int,
    raw: dict[str, Any],
    request: Any,
    work: Path,
    work_root: Path | None = None,
) -> dict[str, Any]:
    result = service.run(request, work)
    output = ctx.invocation.output
    loc = output.s3.child(ctx.request_id, f"{index:02d}-{_input_label(raw)}") if output.s3 else None
    try:
        entry = _deliver(ctx, index, raw, result, loc, work)
    except Exception as exc:
        if loc is None or not _is_storage_error(exc):
            raise
        code = _s3_error_code(exc)
        status = 400 if code in _OUTPUT_CLIENT_CODES else 502
        report = _public_report(result.report, None, None)
        kept = {
            "seg": _keep_seg(ctx, index, Path(result.seg_path), work_root),
            "spleenVolumeMl": (report.get("spleen") or {}).get("volumeMl"),
            "report": report,
        }
        logger.error(
            "request %s input %d: cannot write the result to %s: %s", ctx.request_id, index, loc.uri, exc
        )
        raise OutputWriteError(
            f"cannot write the result to the output location s3://{loc.bucket}/ (bucket {loc.bucket!r}): "
            f"{code or type(exc).__name__}: {str(exc)[:300]}; fix output.s3Uri (or the endpoint's "
            "SPLEEN_OUTPUT_S3_URI) and the role's s3:PutObject permission. The segmentation is in this "
            "response (seg.base64 or seg.keptAt)",
            status,
            kept,
        ) from exc
    if output.write_back is not None:
        entry["writeBackToAHI"] = _write_back(ctx, output.write_back, raw, Path(result.seg_path), loc)
    return entry


def _deliver(
    ctx: _Context, index: int, raw: dict[str, Any], result: Any, loc: S3Uri | None, work: Path
) -> dict[str, Any]:
    """Upload the SEG, STL and preview together, then the report that names them (written last, so a report
    in S3 means its files are there too)."""
    seg_path = Path(result.seg_path)
    files = {SEG_NAME: (seg_path, "application/dicom")}
    for name, path, content_type in (
        (STL_NAME, result.stl_path, "model/stl"),
        (PREVIEW_NAME, result.preview_path, "image/png"),
    ):
        if path is not None and Path(path).is_file():
            files[name] = (Path(path), content_type)
    targets = {name: loc.child(name) for name in files} if loc is not None else {}
    _upload_all(ctx.s3, [(files[name][0], target, files[name][1]) for name, target in targets.items()])
    seg = _seg_entry(ctx, seg_path, targets.get(SEG_NAME))
    stl_uri = targets[STL_NAME].uri if STL_NAME in targets else None
    preview_uri = targets[PREVIEW_NAME].uri if PREVIEW_NAME in targets else None
    report = _public_report(result.report, seg["s3Uri"], stl_uri, preview_uri)
    entry: dict[str, Any] = {
        "index": index,
        "input": raw,
        "status": "succeeded",
        "spleenVolumeMl": (report.get("spleen") or {}).get("volumeMl"),
        "seg": seg,
        "stlS3Uri": stl_uri,
        "previewS3Uri": preview_uri,
        "reportS3Uri": None,
        "report": report,
    }
    if loc is not None:
        report_loc = loc.child(REPORT_NAME)
        body = json.dumps(report, indent=2, default=str).encode()
        ctx.s3.put_object(Bucket=report_loc.bucket, Key=report_loc.key, Body=body, ContentType=JSON_TYPE)
        entry["reportS3Uri"] = report_loc.uri
    return entry


def remove_orphaned_work_dirs(work_root: Path) -> None:
    """Remove working directories whose worker process is gone (killed mid-request: OOM, SIGKILL, a stopped
    server), so their files (SEG with patient data) do not pile up. Names carry the owner's PID."""
    try:
        entries = list(work_root.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _WORK_DIR_NAME.match(entry.name)
        if match and entry.is_dir() and not psutil.pid_exists(int(match[1])):
            logger.info("removing %s left by a worker that died mid-request", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _not_started(
    invocation: Invocation, first: int, budget_s: float, elapsed_s: float, slowest_s: float
) -> TimeBudgetExceededError:
    count = len(invocation.raw_inputs)
    return TimeBudgetExceededError(
        f"inputs[{first}..{count - 1}] not started: {elapsed_s:.0f} s of the request's {budget_s:.0f} s time "
        f"budget are used and the slowest input so far took {slowest_s:.0f} s; send these "
        f"{count - first} input(s) in another request (or fewer inputs per request)"
    )


def _bound_error_body(body: dict[str, Any], work_root: Path | None, request_id: str) -> None:
    """Leave inline SEG bytes out of an error body that would exceed :data:`ERROR_BODY_LIMIT`."""
    size = len(json.dumps(body, default=str))
    for entry in body["results"]:
        if size <= ERROR_BODY_LIMIT:
            return
        seg = entry.get("seg")
        if not isinstance(seg, dict) or "base64" not in seg:
            continue
        encoded = seg.pop("base64")
        size -= len(encoded)
        if seg.get("s3Uri"):
            seg["inlineOmitted"] = "left out of this error response (kept under 1 MiB); read it from s3Uri"
        else:
            kept = _undelivered_path(work_root, request_id, entry["index"])
            kept.write_bytes(base64.b64decode(encoded))
            seg["keptAt"] = str(kept)
            seg["inlineOmitted"] = (
                "left out of this error response (kept under 1 MiB); kept on the serving host at keptAt "
                "(set output.s3Uri to receive it)"
            )


def run_invocation(
    service: Any,
    invocation: Invocation,
    request_id: str,
    work_root: Path | None = None,
    inline_limit: int = DEFAULT_INLINE_SEG_MAX_BYTES,
    clients: AwsClients | None = None,
    time_budget_s: float | None = None,
) -> InvocationResult:
    """Run every input of ``invocation`` through ``service.run`` in its own working directory, one after
    another; with ``time_budget_s``, inputs that would not finish within it are answered ``notStarted``.

    ``clients`` are the worker's AWS clients (built once per worker); a fresh :class:`AwsClients` otherwise.
    """
    ctx = _Context(invocation, request_id, clients or AwsClients(), inline_limit)
    remove_orphaned_work_dirs(work_root or Path(tempfile.gettempdir()))
    results: list[dict[str, Any]] = []
    first_error: tuple[int, dict[str, Any]] | None = None
    request_started = time.perf_counter()
    slowest = 0.0
    skipped: TimeBudgetExceededError | None = None
    for index, (raw, request) in enumerate(zip(invocation.raw_inputs, invocation.requests, strict=True)):
        elapsed = time.perf_counter() - request_started
        if skipped is None and time_budget_s is not None and index and elapsed + slowest > time_budget_s:
            skipped = _not_started(invocation, index, time_budget_s, elapsed, slowest)
        if skipped is not None:
            status, err = error_body(skipped, request_id)
            results.append({"index": index, "input": raw, "status": "notStarted", "error": err})
            first_error = first_error or (status, err)
            continue
        prefix = f"{WORK_DIR_PREFIX}{os.getpid()}-{request_id[:8]}-{index:02d}-"
        work = Path(tempfile.mkdtemp(prefix=prefix, dir=work_root))
        started = time.perf_counter()
        try:
            entry = _one_input(ctx, service, index, raw, request, work, work_root)
        except Exception as exc:  # every input gets an outcome; the error type decides the status
            status, err = error_body(exc, request_id)
            entry = {"index": index, "input": raw, "status": "failed", "error": err}
            if isinstance(exc, OutputWriteError):
                entry.update(exc.kept)
            first_error = first_error or (status, err)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        slowest = max(slowest, time.perf_counter() - started)
        entry["seconds"] = round(time.perf_counter() - started, 3)
        logger.info(
            "request %s input %d (%s): %s in %.2f s",
            request_id,
            index,
            _input_label(raw),
            entry["status"],
            entry["seconds"],
        )
        emit_input_metrics(request_id, entry)  # one CloudWatch EMF line per input
        results.append(entry)
    body: dict[str, Any] = {"requestId": request_id, "results": results}
    if first_error is None:
        return InvocationResult(200, body)
    body["error"] = first_error[1]
    _bound_error_body(body, work_root, request_id)
    return InvocationResult(first_error[0], body)

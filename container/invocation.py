"""Run one validated invocation with ``app.service.SpleenSegService`` and build the response (no MMS here).

Shared by the MME container's ``ModelHandler`` and ``container/prebuilt/inference.py`` (SageMaker's prebuilt
PyTorch container): each input runs in its own temporary working directory (removed afterwards, so concurrent
requests never share files), its SEG/STL/report go to
``s3://<output prefix>/<request id>/<NN>-<image set or study>/``, the SEG bytes are returned inline only when
asked and when they fit the 6 MB real-time response limit, and the SEG is imported back into AHI only when
``output.writeBackToAHI`` asks for it.

Status: 200 when every input succeeded; otherwise the status of the first failed input (product errors carry
``http_status``; anything else is a 500 whose message only carries the request ID; the trace goes to the log).
The body always lists every input's outcome, so results of the inputs that did succeed are never lost.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from container.payload import Invocation, S3Location, WriteBack

logger = logging.getLogger(__name__)

SEG_NAME = "seg.dcm"
STL_NAME = "spleen.stl"
REPORT_NAME = "report.json"
#: Per-input working directories: ``<work root>/spleen-p<worker pid>-<request id>-<NN>-<random>``.
WORK_DIR_PREFIX = "spleen-p"
_WORK_DIR_NAME = re.compile(r"^spleen-p(\d+)-")
IMPORT_POLL_TIMEOUT_S = 300.0


@dataclasses.dataclass(frozen=True)
class InvocationResult:
    status: int
    body: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(self.body, default=str)


def default_s3_client() -> Any:
    """S3 client from the standard chain (``AWS_ENDPOINT_URL_S3`` for a local endpoint), with retries."""
    import boto3
    from botocore.config import Config

    local = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"} if local else {},
    )
    return boto3.client("s3", config=config)


def default_ahi_client() -> Any:
    from ahi_connector.client import make_ahi_client

    return make_ahi_client()


def error_body(exc: BaseException, request_id: str) -> tuple[int, dict[str, Any]]:
    """(status, error object) for an exception: product errors keep status and message; others become 500."""
    status = getattr(exc, "http_status", None)
    if isinstance(status, int) and 400 <= status < 600 and not isinstance(status, bool):
        return status, {"type": type(exc).__name__, "message": str(exc), "httpStatus": status}
    logger.error("request %s failed with an unexpected error", request_id, exc_info=exc)
    return 500, {
        "type": "InternalError",
        "message": f"internal error while serving request {request_id}; the endpoint's log has the details",
        "httpStatus": 500,
    }


def _input_label(raw: dict[str, Any]) -> str:
    return str(raw.get("imageSetId") or raw.get("studyInstanceUid") or "input")


def _upload(s3: Any, path: Path, loc: S3Location, content_type: str) -> str:
    s3.upload_file(str(path), loc.bucket, loc.key, ExtraArgs={"ContentType": content_type})
    return loc.uri


@dataclasses.dataclass
class _Context:
    invocation: Invocation
    request_id: str
    s3_factory: Callable[[], Any]
    ahi_factory: Callable[[], Any]
    inline_budget: int
    _s3: Any = None

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = self.s3_factory()
        return self._s3


def _seg_entry(ctx: _Context, seg_path: Path, loc: S3Location | None) -> dict[str, Any]:
    size = seg_path.stat().st_size
    entry: dict[str, Any] = {"sizeBytes": size, "s3Uri": None}
    if loc is not None:
        entry["s3Uri"] = _upload(ctx.s3, seg_path, loc.child(SEG_NAME), "application/dicom")
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
                + ("" if loc is not None else " (set output.s3Uri)")
            )
    return entry


def _write_back(
    ctx: _Context, wb: WriteBack, raw: dict[str, Any], seg_path: Path, loc: S3Location
) -> dict[str, Any]:
    """Import the SEG into AHI as a new image set (StartDICOMImportJob); wait for it if asked."""
    datastore = wb.datastore_id or raw["datastoreId"]
    staged = loc.child("ahi-import", "input")
    out = loc.child("ahi-import", "output")
    _upload(ctx.s3, seg_path, staged.child(SEG_NAME), "application/dicom")
    ahi = ctx.ahi_factory()
    job = ahi.start_dicom_import_job(
        jobName=f"spleen-seg-{ctx.request_id[:18]}",
        dataAccessRoleArn=wb.role_arn,
        clientToken=uuid.uuid5(uuid.NAMESPACE_URL, staged.uri).hex,
        datastoreId=datastore,
        inputS3Uri=staged.uri + "/",
        outputS3Uri=out.uri + "/",
    )
    entry: dict[str, Any] = {
        "datastoreId": datastore,
        "jobId": job["jobId"],
        "jobStatus": job.get("jobStatus", "SUBMITTED"),
        "inputS3Uri": staged.uri + "/",
        "outputS3Uri": out.uri + "/",
    }
    if wb.wait:
        entry.update(_wait_import(ctx, ahi, datastore, job["jobId"], out))
    return entry


def _wait_import(ctx: _Context, ahi: Any, datastore: str, job_id: str, out: S3Location) -> dict[str, Any]:
    deadline = time.monotonic() + IMPORT_POLL_TIMEOUT_S
    delay = 0.1
    while True:
        props = ahi.get_dicom_import_job(datastoreId=datastore, jobId=job_id)["jobProperties"]
        if props["jobStatus"] in ("COMPLETED", "FAILED") or time.monotonic() > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    result: dict[str, Any] = {"jobStatus": props["jobStatus"]}
    if props["jobStatus"] == "COMPLETED":
        key = out.child(f"{datastore}-DicomImport-{job_id}", "SUCCESS", "success.ndjson")
        body = ctx.s3.get_object(Bucket=key.bucket, Key=key.key)["Body"].read().decode()
        ids = [json.loads(line)["importResponse"]["imageSetId"] for line in body.splitlines() if line.strip()]
        result["imageSetIds"] = list(dict.fromkeys(ids))
    elif props["jobStatus"] == "FAILED":
        result["message"] = props.get("message", "import job failed; see its FAILURE/failure.ndjson")
    return result


def _public_report(report: dict[str, Any], seg_uri: str | None, stl_uri: str | None) -> dict[str, Any]:
    """The report without paths of the (deleted) working directory: S3 URIs where stored, else None."""
    out = dict(report)
    if isinstance(out.get("seg"), dict):
        out["seg"] = {**out["seg"], "path": seg_uri}
    if "stlPath" in out:
        out["stlPath"] = stl_uri
    return out


def _one_input(
    ctx: _Context, service: Any, index: int, raw: dict[str, Any], request: Any, work: Path
) -> dict[str, Any]:
    result = service.run(request, work)
    output = ctx.invocation.output
    loc = output.s3.child(ctx.request_id, f"{index:02d}-{_input_label(raw)}") if output.s3 else None
    seg = _seg_entry(ctx, Path(result.seg_path), loc)
    stl_uri = None
    if loc is not None and result.stl_path is not None and Path(result.stl_path).is_file():
        stl_uri = _upload(ctx.s3, Path(result.stl_path), loc.child(STL_NAME), "model/stl")
    report = _public_report(result.report, seg["s3Uri"], stl_uri)
    entry: dict[str, Any] = {
        "index": index,
        "input": raw,
        "status": "succeeded",
        "spleenVolumeMl": (report.get("spleen") or {}).get("volumeMl"),
        "seg": seg,
        "stlS3Uri": stl_uri,
        "reportS3Uri": None,
        "report": report,
    }
    if loc is not None:
        report_path = work / f"_{REPORT_NAME}"
        report_path.write_text(json.dumps(report, indent=2, default=str))
        entry["reportS3Uri"] = _upload(ctx.s3, report_path, loc.child(REPORT_NAME), "application/json")
    if output.write_back is not None and loc is not None:
        entry["writeBackToAHI"] = _write_back(ctx, output.write_back, raw, Path(result.seg_path), loc)
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


def run_invocation(
    service: Any,
    invocation: Invocation,
    request_id: str,
    work_root: Path | None = None,
    inline_limit: int = 4_500_000,
    s3_factory: Callable[[], Any] = default_s3_client,
    ahi_factory: Callable[[], Any] = default_ahi_client,
) -> InvocationResult:
    """Run every input of ``invocation`` through ``service.run`` in its own working directory."""
    ctx = _Context(invocation, request_id, s3_factory, ahi_factory, inline_limit)
    remove_orphaned_work_dirs(work_root or Path(tempfile.gettempdir()))
    results: list[dict[str, Any]] = []
    first_error: tuple[int, dict[str, Any]] | None = None
    for index, (raw, request) in enumerate(zip(invocation.raw_inputs, invocation.requests, strict=True)):
        prefix = f"{WORK_DIR_PREFIX}{os.getpid()}-{request_id[:8]}-{index:02d}-"
        work = Path(tempfile.mkdtemp(prefix=prefix, dir=work_root))
        started = time.perf_counter()
        try:
            entry = _one_input(ctx, service, index, raw, request, work)
        except Exception as exc:  # every input gets an outcome; the error type decides the status
            status, err = error_body(exc, request_id)
            entry = {"index": index, "input": raw, "status": "failed", "error": err}
            first_error = first_error or (status, err)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        entry["seconds"] = round(time.perf_counter() - started, 3)
        logger.info(
            "request %s input %d (%s): %s in %.2f s",
            request_id,
            index,
            _input_label(raw),
            entry["status"],
            entry["seconds"],
        )
        results.append(entry)
    body: dict[str, Any] = {"requestId": request_id, "results": results}
    if first_error is None:
        return InvocationResult(200, body)
    body["error"] = first_error[1]
    return InvocationResult(first_error[0], body)

"""A SageMaker Batch Transform job run locally: the job's S3 input, split by line, through the container's
``/invocations``, assembled into ``<S3OutputPath>/<input file>.out``.

It executes a job *description* (DescribeTransformJob's answer, or CreateTransformJob's parameters) so what
runs locally is exactly what was submitted to SageMaker (moto records the job; this runs it). As strict as
SageMaker:

* only what the product uses is emulated — ``S3DataType=S3Prefix``, ``SplitType`` ``Line`` or ``None``,
  ``BatchStrategy=SingleRecord``, ``AssembleWith`` ``Line`` or ``None``, no compression, no
  ``DataProcessing``; anything else is refused by name instead of being approximated;
* the container must answer ``GET /ping`` before any record is sent;
* records go out with at most ``MaxConcurrentTransforms`` in flight, each retried at most
  ``ModelClientConfig.InvocationsMaxRetries`` times (SageMaker's default 3) within
  ``InvocationsTimeoutInSeconds`` (default 600);
* a record over ``MaxPayloadInMB`` (default 6) or any record the container answers with a non-2xx status fails
  the job (``Failed`` with the file, line and the container's answer as the reason); outputs of input files
  whose records all succeeded are still written, as SageMaker does;
* no S3 object under the input prefix fails the job.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ahi_connector.s3uri import S3Uri, S3UriError

logger = logging.getLogger(__name__)

DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT_S = 600
DEFAULT_MAX_PAYLOAD_MB = 6


class TransformJobError(ValueError):
    """The job asks for something this emulator does not do (named), or is malformed."""


@dataclass(frozen=True)
class RecordFailure:
    key: str
    line: int
    status: int
    message: str


@dataclass
class TransformResult:
    status: str  # Completed | Failed
    records: int = 0
    outputs: list[str] = field(default_factory=list)
    failure_reason: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class JobSpec:
    name: str
    input: S3Uri
    content_type: str
    split_type: str
    output: S3Uri
    accept: str
    assemble_with: str
    max_concurrent: int
    retries: int
    timeout_s: float
    max_payload_bytes: int

    @classmethod
    def from_description(cls, job: dict[str, Any]) -> JobSpec:
        name = str(job.get("TransformJobName", "local-transform"))
        tin, tout = job.get("TransformInput") or {}, job.get("TransformOutput") or {}
        source = (tin.get("DataSource") or {}).get("S3DataSource") or {}
        if source.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise TransformJobError(
                f"{name}: S3DataType {source.get('S3DataType')!r} is not emulated (S3Prefix only)"
            )
        split = str(tin.get("SplitType", "None"))
        if split not in ("Line", "None"):
            raise TransformJobError(f"{name}: SplitType {split!r} is not emulated (Line or None)")
        if str(tin.get("CompressionType", "None")) != "None":
            raise TransformJobError(f"{name}: CompressionType {tin.get('CompressionType')!r} is not emulated")
        strategy = str(job.get("BatchStrategy", "SingleRecord") or "SingleRecord")
        if strategy != "SingleRecord":
            raise TransformJobError(f"{name}: BatchStrategy {strategy!r} is not emulated (SingleRecord only)")
        if job.get("DataProcessing"):
            raise TransformJobError(f"{name}: DataProcessing (input/output filters, joins) is not emulated")
        assemble = str(tout.get("AssembleWith", "None"))
        if assemble not in ("Line", "None"):
            raise TransformJobError(f"{name}: AssembleWith {assemble!r} is not valid (Line or None)")
        client = job.get("ModelClientConfig") or {}
        try:
            input_loc = S3Uri.parse(str(source.get("S3Uri", "")), "TransformInput.S3Uri")
            output_loc = S3Uri.parse(str(tout.get("S3OutputPath", "")), "TransformOutput.S3OutputPath")
        except S3UriError as exc:
            raise TransformJobError(f"{name}: {exc}") from exc
        max_concurrent = int(job.get("MaxConcurrentTransforms") or 1)
        if max_concurrent < 1:
            raise TransformJobError(f"{name}: MaxConcurrentTransforms must be >= 1, got {max_concurrent}")
        return cls(
            name=name,
            input=input_loc,
            content_type=str(tin.get("ContentType") or "application/octet-stream"),
            split_type=split,
            output=output_loc,
            accept=str(tout.get("Accept") or "application/json"),
            assemble_with=assemble,
            max_concurrent=max_concurrent,
            retries=int(client.get("InvocationsMaxRetries", DEFAULT_RETRIES)),
            timeout_s=float(client.get("InvocationsTimeoutInSeconds", DEFAULT_TIMEOUT_S)),
            max_payload_bytes=int(job.get("MaxPayloadInMB") or DEFAULT_MAX_PAYLOAD_MB) * 1024 * 1024,
        )


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _ping(container_url: str, wait_s: float = 60.0) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(f"{container_url}/ping", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TransformJobError(
                f"the container at {container_url} did not answer GET /ping within {wait_s:.0f} s"
            )
        time.sleep(0.5)


class TransformRunner:
    """Runs one job against one container (``container_url``: the single-model image's HTTP root)."""

    def __init__(self, job: dict[str, Any], container_url: str, s3: Any) -> None:
        self.spec = JobSpec.from_description(job)
        self.container_url = container_url.rstrip("/")
        self.s3 = s3

    def _inputs(self) -> list[str]:
        keys = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.spec.input.bucket, Prefix=self.spec.input.key):
            keys += [obj["Key"] for obj in page.get("Contents", []) if not obj["Key"].endswith("/")]
        return sorted(keys)

    def _records(self, data: bytes) -> list[bytes]:
        if self.spec.split_type == "None":
            return [data]
        return [line for line in data.split(b"\n") if line.strip()]

    def _invoke(self, record: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": self.spec.content_type, "Accept": self.spec.accept}
        status, body = 0, b""
        for attempt in range(self.spec.retries + 1):
            try:
                status, body = _post(
                    f"{self.container_url}/invocations", record, headers, self.spec.timeout_s
                )
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                status, body = 0, f"no answer from the container: {exc}".encode()
            if 200 <= status < 300 or 400 <= status < 500:
                return status, body
            logger.info("record answered %d; attempt %d of %d", status, attempt + 1, self.spec.retries + 1)
        return status, body

    def run(self) -> TransformResult:
        started = time.monotonic()
        result = TransformResult("Completed")
        keys = self._inputs()
        if not keys:
            result.status = "Failed"
            result.failure_reason = f"ClientError: no S3 objects found under {self.spec.input.uri}"
            return result
        _ping(self.container_url)
        failures: list[RecordFailure] = []
        with ThreadPoolExecutor(max_workers=self.spec.max_concurrent) as pool:
            for key in keys:
                data = self.s3.get_object(Bucket=self.spec.input.bucket, Key=key)["Body"].read()
                records = self._records(data)
                too_big = [i for i, r in enumerate(records, 1) if len(r) > self.spec.max_payload_bytes]
                if too_big:
                    failures.append(RecordFailure(key, too_big[0], 413, "record larger than MaxPayloadInMB"))
                    continue
                answers = list(pool.map(self._invoke, records))  # order kept: line i -> answer i
                result.records += len(records)
                bad = [(i, s, b) for i, (s, b) in enumerate(answers, 1) if not 200 <= s < 300]
                if bad:
                    line, status, body = bad[0]
                    failures.append(RecordFailure(key, line, status, body[:500].decode(errors="replace")))
                    continue
                out_key = self._output_key(key)
                joiner = b"\n" if self.spec.assemble_with == "Line" else b""
                payload = joiner.join(body.rstrip(b"\n") if joiner else body for _, body in answers)
                if joiner:
                    payload += b"\n"
                self.s3.put_object(
                    Bucket=self.spec.output.bucket, Key=out_key, Body=payload, ContentType=self.spec.accept
                )
                result.outputs.append(f"s3://{self.spec.output.bucket}/{out_key}")
        if failures:
            first = failures[0]
            result.status = "Failed"
            result.failure_reason = (
                f"ClientError: {len(failures)} input file(s) failed; first: "
                f"s3://{self.spec.input.bucket}/{first.key} "
                f"line {first.line}: container answered {first.status}: {first.message}"
            )
        result.seconds = time.monotonic() - started
        logger.info(
            "transform job %s %s: %d records in %.1f s",
            self.spec.name,
            result.status,
            result.records,
            result.seconds,
        )
        return result

    def _output_key(self, key: str) -> str:
        base = self.spec.input.key
        relative = key[len(base) :].lstrip("/") if base and key.startswith(base) else key.rsplit("/", 1)[-1]
        if not relative:  # the prefix named the object itself
            relative = key.rsplit("/", 1)[-1]
        return "/".join(p for p in (self.spec.output.key, f"{relative}.out") if p)

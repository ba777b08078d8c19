"""``batch``: back-fill a datastore through the async endpoint, or as one SageMaker Batch Transform job.

1. **Select**: SearchImageSets over the datastore (paginated; ``DICOMStudyDateAndTime`` and/or ``updatedAt``
   BETWEEN filters) or the image set IDs of a file; then the CT pre-filter on each image set's metadata
   (:mod:`trigger.selection`, the same as the event trigger's).
2. **Async route** (default): every candidate version is submitted once (:mod:`trigger.submission`: the same
   claim + marker objects as the trigger, so trigger and back-fill never both infer one version) with at most
   ``concurrency`` submissions in flight; then the output/failure objects SageMaker writes are collected. A
   local JSON-lines journal records every outcome as it happens: a re-run skips what succeeded or was skipped,
   retries what failed, and keeps waiting for what is still running. Scaling is SageMaker's (``deploy-async``
   autoscaling on the backlog), never a scheduler of ours.
3. **Transform route** (``--transform``): the candidates' requests as a JSON-lines manifest in S3, one
   CreateTransformJob (``SplitType=Line``, ``BatchStrategy=SingleRecord``, ``AssembleWith=Line``, the
   single-model image on ``/invocations``); its name is a hash of the manifest and settings, so a re-run finds
   the same job instead of starting another. Line *i* of the ``.out`` object is the answer to request *i*.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from scripts.aws import deploy, pipeline
from scripts.aws.names import Names, settings_hash
from scripts.aws.session import Aws, AwsCliError, error_code, tag_list, wait_for
from scripts.aws.state import State
from scripts.aws.storage import read_object
from trigger.selection import MIN_SLICES
from trigger.submission import ImageSetRef, Outcome, SubmissionError, Submitter, Target

logger = logging.getLogger(__name__)

JSON = "application/json"
#: Journal statuses that a re-run does not submit again.
SETTLED = {"succeeded", "skipped"}
#: Journal statuses whose result is still to be collected.
PENDING = {"submitted", "duplicate"}
#: Batch Transform AMI for GPU instance types (newest driver offered for transform jobs; CUDA 13 then runs on
#: the image's forward-compatibility libraries).
TRANSFORM_GPU_AMI = "al2-ami-sagemaker-batch-gpu-535"
#: A manifest whose job failed runs again as ``<job>-r2``, ``-r3`` (then the failure stands).
MAX_TRANSFORM_ATTEMPTS = 3


# ---- selection -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """Which image sets of one datastore: a search (study dates, updated since) or an explicit list."""

    datastore_id: str
    study_date_from: str | None = None
    study_date_to: str | None = None
    updated_since: str | None = None
    image_set_ids: tuple[str, ...] | None = None
    min_slices: int | None = None

    def __post_init__(self) -> None:
        for flag, value in (
            ("--study-date-from", self.study_date_from),
            ("--study-date-to", self.study_date_to),
        ):
            if value is not None and not (len(value) == 8 and value.isdigit()):
                raise AwsCliError(f"{flag} {value!r} is not a DICOM date; use YYYYMMDD, e.g. 20240131")
        if self.study_date_from and self.study_date_to and self.study_date_from > self.study_date_to:
            raise AwsCliError(
                f"--study-date-from {self.study_date_from} is after --study-date-to {self.study_date_to}"
            )
        if self.updated_since is not None:
            self.updated_since_dt()
        searching = any((self.study_date_from, self.study_date_to, self.updated_since))
        if self.image_set_ids is not None and searching:
            raise AwsCliError("--ids-file cannot be combined with --study-date-from/--to or --updated-since")
        if self.image_set_ids is not None and not self.image_set_ids:
            raise AwsCliError("the --ids-file lists no image set IDs")

    def updated_since_dt(self) -> datetime:
        try:
            parsed = datetime.fromisoformat(str(self.updated_since).replace("Z", "+00:00"))
        except ValueError as exc:
            raise AwsCliError(
                f"--updated-since {self.updated_since!r} is not an ISO 8601 time; e.g. 2024-05-01T00:00:00Z"
            ) from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)

    def search_criteria(self) -> dict[str, Any]:
        filters: list[dict[str, Any]] = []
        if self.study_date_from or self.study_date_to:
            low = {"DICOMStudyDate": self.study_date_from or "19000101", "DICOMStudyTime": "000000"}
            high = {"DICOMStudyDate": self.study_date_to or "99991231", "DICOMStudyTime": "235959"}
            filters.append(
                {
                    "operator": "BETWEEN",
                    "values": [{"DICOMStudyDateAndTime": low}, {"DICOMStudyDateAndTime": high}],
                }
            )
        if self.updated_since:
            now = datetime.now(timezone.utc)
            filters.append(
                {
                    "operator": "BETWEEN",
                    "values": [{"updatedAt": self.updated_since_dt()}, {"updatedAt": now}],
                }
            )
        return {"filters": filters} if filters else {}

    def describe(self) -> str:
        if self.image_set_ids is not None:
            return f"{len(self.image_set_ids)} image set IDs of a file in datastore {self.datastore_id}"
        parts = [f"datastore {self.datastore_id}"]
        if self.study_date_from or self.study_date_to:
            parts.append(f"study dates {self.study_date_from or '...'}-{self.study_date_to or '...'}")
        if self.updated_since:
            parts.append(f"updated since {self.updated_since}")
        return ", ".join(parts)


def _no_bar(aws: Aws) -> bool:
    """tqdm bars only on a terminal (``lines``/``json``/``off`` progress: the waits report state changes)."""
    return aws.settings.progress_mode != "bar"


def read_ids_file(path: Path) -> tuple[str, ...]:
    """Image set IDs, one per line (blank lines and ``#`` comments ignored; duplicates dropped)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise AwsCliError(f"cannot read --ids-file {str(path)!r}: {exc}") from exc
    ids = [line.split("#", 1)[0].strip() for line in lines]
    bad = [i for i in ids if i and not (len(i) == 32 and i.isalnum())]
    if bad:
        raise AwsCliError(f"--ids-file {str(path)!r}: {bad[0]!r} is not an image set ID (32 letters/digits)")
    return tuple(dict.fromkeys(i for i in ids if i))


def require_datastore(aws: Aws, datastore_id: str) -> None:
    try:
        props = aws.client("medical-imaging").get_datastore(datastoreId=datastore_id)["datastoreProperties"]
    except Exception as exc:
        if error_code(exc) in ("ResourceNotFoundException", "ValidationException"):
            raise AwsCliError(
                f"datastore {datastore_id} not found in {aws.region} ({exc}); "
                "check --datastore-id and --region"
            ) from exc
        raise
    if props.get("datastoreStatus") != "ACTIVE":
        raise AwsCliError(f"datastore {datastore_id} is {props.get('datastoreStatus')}, not ACTIVE")


def search(aws: Aws, selection: Selection) -> Iterator[tuple[str, str | None]]:
    """``(imageSetId, version or None)`` of every image set the selection names (search order)."""
    if selection.image_set_ids is not None:
        for image_set_id in selection.image_set_ids:
            yield image_set_id, None
        return
    params: dict[str, Any] = {"datastoreId": selection.datastore_id}
    criteria = selection.search_criteria()
    if criteria:
        params["searchCriteria"] = criteria
    for summary in aws.paginate(
        "medical-imaging", "search_image_sets", "imageSetsMetadataSummaries", **params
    ):
        version = summary.get("version")
        yield str(summary["imageSetId"]), (str(version) if version is not None else None)


# ---- journal ---------------------------------------------------------------------------------------------
def default_journal(names: Names, region: str, selection: Selection) -> Path:
    root = Path(os.environ.get("AHI_SPLEEN_STATE_DIR", Path.home() / ".ahi-spleen"))
    return root / f"{names.name}-{region}-batch-{settings_hash(asdict(selection))}.jsonl"


class Journal:
    """Append-only JSON lines, one per outcome (the last line of a version wins); safe across threads."""

    def __init__(self, path: Path, persist: bool = True) -> None:
        self.path, self.persist = path, persist
        self._lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (ValueError, KeyError) as exc:
                    raise AwsCliError(
                        f"journal {path} line {number} is unreadable ({exc}); fix or move it to start afresh"
                    ) from exc

    @staticmethod
    def key(datastore_id: str, image_set_id: str, version: str | None) -> str:
        return f"{datastore_id}/{image_set_id}/v{version or '?'}"

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def record(self, key: str, **entry: Any) -> dict[str, Any]:
        full = {"key": key, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **entry}
        with self._lock:
            self.entries[key] = full
            if self.persist:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(full, default=str) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
        return full


# ---- report ----------------------------------------------------------------------------------------------
@dataclass
class BatchReport:
    selection: str
    route: str
    journal: str | None
    items: list[dict[str, Any]] = field(default_factory=list)
    transform_job: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(item["status"] for item in self.items))

    @property
    def exit_code(self) -> int:
        return 1 if any(item["status"] in ("failed", "submit-failed") for item in self.items) else 0

    def table(self) -> str:
        """The summary as a fixed-width table: one row per image set, then the counts."""
        rows = [("image set", "version", "status", "detail")]
        for item in self.items:
            detail = item.get("reason") or item.get("output_location") or ""
            if item.get("spleenVolumeMl") is not None:
                detail = f"spleen {item['spleenVolumeMl']:.1f} mL -> {item.get('output_location')}"
            rows.append(
                (item["image_set_id"], str(item.get("version_id") or "?"), item["status"], str(detail)[:110])
            )
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items())) or "nothing selected"
        return "\n".join([*lines, f"-- {self.route}: {counts}"])

    def to_json(self) -> dict[str, Any]:
        return {
            "selection": self.selection,
            "route": self.route,
            "journal": self.journal,
            "transformJob": self.transform_job,
            "counts": self.counts,
            "items": self.items,
        }


# ---- async route -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AsyncSettings:
    endpoint_name: str
    concurrency: int = 8
    output_s3_uri: str | None = None
    wait: bool = True
    timeout_s: float = 6 * 3600.0
    poll_interval_s: float = 15.0
    #: check the endpoint with DescribeEndpoint first (off where no SageMaker control plane exists: the local
    #: stack has only the runtime, whose InvokeEndpointAsync then names a missing endpoint)
    verify_endpoint: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 256:
            raise AwsCliError(f"--concurrency must be 1..256, got {self.concurrency}")


def require_async_endpoint(aws: Aws, endpoint_name: str) -> None:
    endpoint = deploy.describe_endpoint(aws, endpoint_name)
    if endpoint is None:
        raise AwsCliError(
            f"async endpoint {endpoint_name} does not exist: deploy it with `ahi-spleen deploy-async` "
            "or pass "
            "--endpoint-name (nothing was submitted)"
        )
    config = aws.client("sagemaker").describe_endpoint_config(
        EndpointConfigName=endpoint["EndpointConfigName"]
    )
    if "AsyncInferenceConfig" not in config:
        raise AwsCliError(f"endpoint {endpoint_name} is not an async endpoint (no AsyncInferenceConfig)")
    if endpoint.get("EndpointStatus") not in ("InService", "Updating", "SystemUpdating"):
        raise AwsCliError(f"endpoint {endpoint_name} is {endpoint.get('EndpointStatus')}, not InService")


def _submitter(
    aws: Aws,
    names: Names,
    bucket: str,
    endpoint: str,
    output: str | None,
    run_id: str,
    min_slices: int | None,
) -> Submitter:
    target = Target(endpoint, bucket, names.request_prefix, output)
    return Submitter(
        aws.client("s3"),
        aws.client("sagemaker-runtime"),
        aws.client("medical-imaging"),
        target,
        run_id,
        min_slices=min_slices or MIN_SLICES,
    )


def _item(outcome: Outcome) -> dict[str, Any]:
    data = outcome.to_json()
    return {k: v for k, v in data.items() if v not in (None, "")}


def _result_of(body: bytes, failed: bool) -> dict[str, Any]:
    """``status``/``reason``/``spleenVolumeMl`` from an async output or failure object."""
    try:
        doc = json.loads(body)
    except ValueError:
        return {"status": "failed" if failed else "succeeded", "reason": body[:300].decode(errors="replace")}
    results = doc.get("results") if isinstance(doc, dict) else None
    first = results[0] if isinstance(results, list) and results else {}
    if failed or first.get("status") == "failed":
        error = first.get("error") or doc.get("error") or doc
        message = error.get("message") if isinstance(error, dict) else str(error)
        return {"status": "failed", "reason": str(message)[:500]}
    return {"status": "succeeded", "spleenVolumeMl": first.get("spleenVolumeMl")}


def run_async(
    aws: Aws,
    names: Names,
    selection: Selection,
    bucket: str,
    settings: AsyncSettings,
    journal_path: Path,
    state: State,
) -> BatchReport:
    """Select, submit (bounded concurrency, journaled), then collect results; see the module doc."""
    require_datastore(aws, selection.datastore_id)
    if settings.verify_endpoint and not aws.dry_run:
        require_async_endpoint(aws, settings.endpoint_name)
    journal = Journal(journal_path, persist=not aws.dry_run)
    report = BatchReport(selection.describe(), f"async endpoint {settings.endpoint_name}", str(journal_path))
    run_id = f"batch-{settings_hash([str(journal_path), time.time()], 12)}"
    submitter = _submitter(
        aws, names, bucket, settings.endpoint_name, settings.output_s3_uri, run_id, selection.min_slices
    )
    found = list(search(aws, selection))
    if not found:
        raise AwsCliError(f"no image sets match {selection.describe()}; nothing to do")
    if not aws.dry_run:
        state.add("s3_prefixes", f"s3://{bucket}/{names.s3_root}")
    items: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, str | None]] = []
    for image_set_id, version in found:
        key = Journal.key(selection.datastore_id, image_set_id, version)
        entry = journal.get(key) if version else None
        if entry and entry["status"] in SETTLED | PENDING:
            items[key] = entry
        else:
            todo.append((image_set_id, version))

    def one(image_set_id: str, version: str | None) -> dict[str, Any]:
        if aws.dry_run:
            ref = submitter.resolve(selection.datastore_id, image_set_id, version)
            if isinstance(ref, Outcome):
                return _item(ref)
            if (done := submitter.submitted(ref)) is not None:
                return _item(done)
            sel = submitter.select(ref)
            status = "would-submit" if sel.ok else "skipped"
            return {
                "status": status,
                "datastore_id": ref.datastore_id,
                "image_set_id": ref.image_set_id,
                "version_id": ref.version_id,
                "reason": sel.reason,
            }
        try:
            outcome = submitter.process(selection.datastore_id, image_set_id, version)
        except SubmissionError as exc:
            return {
                "status": "submit-failed",
                "datastore_id": selection.datastore_id,
                "image_set_id": image_set_id,
                "version_id": version,
                "reason": str(exc),
            }
        except Exception as exc:  # AHI/S3 errors after retries: journaled as failed, retried on re-run
            code = error_code(exc) or type(exc).__name__
            return {
                "status": "submit-failed",
                "datastore_id": selection.datastore_id,
                "image_set_id": image_set_id,
                "version_id": version,
                "reason": f"{code}: {exc}",
            }
        return _item(outcome)

    with (
        ThreadPoolExecutor(max_workers=settings.concurrency) as pool,
        tqdm(total=len(todo), desc="submit", unit="image set", disable=_no_bar(aws)) as bar,
    ):
        futures = [pool.submit(one, i, v) for i, v in todo]
        for future in as_completed(futures):
            entry = future.result()
            key = Journal.key(entry["datastore_id"], entry["image_set_id"], entry.get("version_id"))
            items[key] = entry if aws.dry_run else journal.record(key, **entry)
            bar.update(1)
            bar.set_postfix_str(entry["status"])
    if all(e["status"] == "skipped" for e in items.values()):
        logger.warning(
            "no CT image set to segment among the %d image sets of %s (reasons in the table); none submitted",
            len(items),
            selection.describe(),
        )
    if settings.wait and not aws.dry_run:
        _collect(aws, journal, items, settings)
    report.items = sorted(items.values(), key=lambda e: (e["status"], e["image_set_id"]))
    return report


def _collect(aws: Aws, journal: Journal, items: dict[str, dict[str, Any]], settings: AsyncSettings) -> None:
    """Poll the output/failure objects of every pending item until all are in (or the timeout)."""
    pending = {k for k, e in items.items() if e["status"] in PENDING and e.get("output_location")}
    if not pending:
        return
    bar = tqdm(total=len(pending), desc="results", unit="image set", disable=_no_bar(aws))

    def check() -> str:
        for key in sorted(pending):
            entry = items[key]
            for uri, failed in ((entry.get("output_location"), False), (entry.get("failure_location"), True)):
                body = read_object(aws, uri) if uri else None
                if body is not None:
                    merged = {k: v for k, v in entry.items() if k not in ("key", "time", "reason")}
                    merged.update(_result_of(body, failed))
                    merged["result_location"] = uri
                    items[key] = journal.record(key, **merged)
                    pending.discard(key)
                    bar.update(1)
                    break
        return "done" if not pending else f"{len(pending)} running"

    try:
        wait_for(
            check,
            what="async results",
            done={"done"},
            timeout_s=settings.timeout_s,
            interval_s=settings.poll_interval_s,
            progress=False,
        )
    except AwsCliError as exc:
        logger.warning("%s; re-run the same command to keep collecting (nothing is submitted twice)", exc)
    finally:
        bar.close()


# ---- transform route -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TransformSettings:
    image: str
    role_arn: str
    model_data_url: str
    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = 1
    max_concurrent: int = 1
    output_s3_uri: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = {"InstanceType": self.instance_type, "InstanceCount": self.instance_count}
        if deploy.is_accelerated(self.instance_type):
            resources["TransformAmiVersion"] = TRANSFORM_GPU_AMI
        return resources


def default_image(aws: Aws, names: Names, tag: str) -> str:
    try:
        return f"{pipeline.repository_uri(aws, names)}:{tag}"
    except AwsCliError:
        if not aws.dry_run:
            raise
        return f"<ECR repository {names.ecr_repository}>:{tag}"


def transform_job_params(
    job_name: str, model_name: str, manifest_uri: str, output_uri: str, settings: TransformSettings
) -> dict[str, Any]:
    return {
        "TransformJobName": job_name,
        "ModelName": model_name,
        "MaxConcurrentTransforms": settings.max_concurrent * settings.instance_count,
        # one try per record: a retried request would be a second inference of the same version
        "ModelClientConfig": {"InvocationsTimeoutInSeconds": 3600, "InvocationsMaxRetries": 0},
        "MaxPayloadInMB": 1,
        "BatchStrategy": "SingleRecord",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": manifest_uri}},
            "ContentType": JSON,
            "CompressionType": "None",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": JSON, "AssembleWith": "Line"},
        "TransformResources": settings.resources(),
    }


def describe_transform_job(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        return dict(aws.client("sagemaker").describe_transform_job(TransformJobName=name))
    except Exception as exc:
        if error_code(exc) in ("ValidationException", "ResourceNotFound") and "not" in str(exc).lower():
            return None
        raise


def _candidates(
    aws: Aws, names: Names, selection: Selection, bucket: str
) -> tuple[list[ImageSetRef], list[dict[str, Any]]]:
    submitter = _submitter(aws, names, bucket, "-", None, "transform", selection.min_slices)
    refs, skipped = [], []
    for image_set_id, version in search(aws, selection):
        ref = submitter.resolve(selection.datastore_id, image_set_id, version)
        if isinstance(ref, Outcome):
            skipped.append(_item(ref))
            continue
        done = submitter.submitted(ref)
        if done is not None:  # the async route already has it: never a second inference
            skipped.append({**_item(done), "status": "skipped", "reason": f"async route: {done.reason}"})
            continue
        sel = submitter.select(ref)
        if sel.ok:
            refs.append(ref)
        else:
            skipped.append(
                {
                    "status": "skipped",
                    "datastore_id": ref.datastore_id,
                    "image_set_id": ref.image_set_id,
                    "version_id": ref.version_id,
                    "reason": sel.reason,
                }
            )
    return refs, skipped


def run_transform(
    aws: Aws,
    names: Names,
    selection: Selection,
    bucket: str,
    settings: TransformSettings,
    state: State,
    wait: bool = True,
    timeout_s: float = 6 * 3600.0,
) -> BatchReport:
    """Manifest → model → CreateTransformJob (once per manifest+settings) → wait → per-line results."""
    require_datastore(aws, selection.datastore_id)
    refs, skipped = _candidates(aws, names, selection, bucket)
    if not refs:
        reasons = "; ".join(f"{s['image_set_id']}: {s.get('reason')}" for s in skipped[:5]) or "no image sets"
        raise AwsCliError(f"no CT image set to segment in {selection.describe()} ({reasons})")
    target = Target("-", bucket, names.request_prefix, settings.output_s3_uri)
    lines = [target.body(ref).decode() for ref in refs]
    manifest = ("\n".join(lines) + "\n").encode()
    spec = deploy.EndpointSpec(
        "rt",
        settings.image,
        settings.role_arn,
        settings.model_data_url,
        settings.instance_type,
        1,
        dict(settings.env),
    )
    model_name = deploy.ensure_model(aws, names, spec)
    manifest_hash = settings_hash(lines, 16)
    manifest_key = f"{names.transform_input_prefix}{manifest_hash}.jsonl"
    manifest_uri = f"s3://{bucket}/{manifest_key}"
    job_name = names.transform_job(
        {
            "manifest": manifest_hash,
            "model": model_name,
            **settings.resources(),
            "concurrent": settings.max_concurrent,
        }
    )
    base_name = job_name
    current = describe_transform_job(aws, job_name)
    for attempt in range(
        2, MAX_TRANSFORM_ATTEMPTS + 1
    ):  # a failed or stopped job is retried under a new name
        if current is None or current.get("TransformJobStatus") not in ("Failed", "Stopped"):
            break
        logger.warning(
            "transform job %s is %s (%s); starting attempt %d",
            job_name,
            current["TransformJobStatus"],
            current.get("FailureReason", "no reason given"),
            attempt,
        )
        job_name = f"{base_name[: 63 - 3]}-r{attempt}"
        current = describe_transform_job(aws, job_name)
    output_uri = f"s3://{bucket}/{names.transform_output_prefix}{job_name}/"
    report = BatchReport(selection.describe(), f"transform job {job_name}", None, transform_job=job_name)
    if current is None:
        aws.call(
            "s3",
            "put_object",
            Bucket=bucket,
            Key=manifest_key,
            Body=manifest,
            ContentType="application/jsonlines",
        )
        if not aws.dry_run:
            state.add("s3_prefixes", f"s3://{bucket}/{names.s3_root}")
        aws.call(
            "sagemaker",
            "create_transform_job",
            **transform_job_params(job_name, model_name, manifest_uri, output_uri, settings),
            Tags=tag_list(names.name),
        )
    status = "dry run" if aws.dry_run else str((current or {}).get("TransformJobStatus", "InProgress"))
    if wait and not aws.dry_run:
        status = _wait_transform(aws, job_name, timeout_s)
    report.items = [*skipped, *_transform_items(aws, refs, output_uri, manifest_key, status, job_name)]
    return report


def _wait_transform(aws: Aws, job_name: str, timeout_s: float) -> str:
    sm = aws.client("sagemaker")
    last: dict[str, Any] = {}

    def status() -> str:
        last.update(sm.describe_transform_job(TransformJobName=job_name))
        return str(last["TransformJobStatus"])

    return wait_for(
        status,
        what=f"transform job {job_name}",
        done={"Completed", "Failed", "Stopped"},
        timeout_s=timeout_s,
        interval_s=30.0,
        progress=aws.settings.progress_mode,
    )


def _transform_items(
    aws: Aws, refs: list[ImageSetRef], output_uri: str, manifest_key: str, status: str, job_name: str
) -> Iterable[dict[str, Any]]:
    base = {"status": "submitted", "reason": f"transform job {job_name} {status}"}
    out_uri = f"{output_uri}{manifest_key.rsplit('/', 1)[-1]}.out"
    body = read_object(aws, out_uri) if status in ("Completed", "Failed", "Stopped") else None
    answers = body.decode().splitlines() if body is not None else []
    if status == "Failed" and not answers:
        reason = (
            aws.client("sagemaker").describe_transform_job(TransformJobName=job_name).get("FailureReason", "")
        )
        base = {"status": "failed", "reason": f"transform job {job_name} failed: {reason}"}
    for index, ref in enumerate(refs):
        item = {
            "datastore_id": ref.datastore_id,
            "image_set_id": ref.image_set_id,
            "version_id": ref.version_id,
        }
        if index < len(answers):
            item.update(
                _result_of(answers[index].encode(), False), output_location=f"{out_uri}#line={index + 1}"
            )
        else:
            item.update(base)
        yield item

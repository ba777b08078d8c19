"""Submit each image set version to the async endpoint at most once, whoever asks (trigger, back-fill).

Every version gets a deterministic request object,
``s3://<bucket>/<prefix><datastoreId>/<imageSetId>/v<N>.json``, written with ``If-None-Match: *``: the first
writer *claims* the version; anyone else gets 412 and stands back. After ``InvokeEndpointAsync`` answers, a
*marker* object next to it (``v<N>.submitted.json``) records the InferenceId and the output/failure locations;
a later request for the same version finds the marker and reports a duplicate without invoking. A claim whose
submission failed is deleted again (so a retry may claim it); a claim left by a process that died is taken
over by the same claimant (a Lambda retry of the same event carries the same event id) at once, by anyone else
after :data:`CLAIM_LEASE_S`, with ``If-Match`` on the claim's ETag so two takers cannot both win. The one
window left: a crash after the endpoint accepted the request and before the marker is written; the retry then
submits the version a second time.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from trigger.selection import MIN_SLICES, Selection, decode_metadata, select_ct

logger = logging.getLogger(__name__)

#: A claim older than this without a marker belongs to a submitter that died (longer than a Lambda timeout).
CLAIM_LEASE_S = 900.0
JSON = "application/json"
#: S3 answers these when a conditional write loses (412 from If-None-Match/If-Match, 409 for a concurrent
# one).
CONDITION_LOST = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
NOT_FOUND = ("NoSuchKey", "404", "NotFound")
RETRYABLE_RUNTIME = ("ThrottlingException", "ServiceUnavailable", "InternalFailure", "ModelNotReadyException")


def _code(exc: BaseException) -> str:
    return str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class ImageSetRef:
    """One version of one image set."""

    datastore_id: str
    image_set_id: str
    version_id: str

    @property
    def inference_id(self) -> str:
        """The InferenceId sent with the request (at most 64 printable characters, as SageMaker allows)."""
        return f"{self.image_set_id}-v{self.version_id}"

    def __str__(self) -> str:
        return f"image set {self.image_set_id} version {self.version_id} (datastore {self.datastore_id})"


@dataclass(frozen=True)
class Target:
    """Where requests go: the async endpoint, bucket and prefix of request objects, the results' S3 URI."""

    endpoint_name: str
    bucket: str
    prefix: str
    output_s3_uri: str | None = None

    def __post_init__(self) -> None:
        if not self.prefix.endswith("/"):
            raise ValueError(f"request prefix {self.prefix!r} must end with '/'")

    def request_key(self, ref: ImageSetRef) -> str:
        return f"{self.prefix}{ref.datastore_id}/{ref.image_set_id}/v{ref.version_id}.json"

    def marker_key(self, ref: ImageSetRef) -> str:
        return f"{self.prefix}{ref.datastore_id}/{ref.image_set_id}/v{ref.version_id}.submitted.json"

    def body(self, ref: ImageSetRef) -> bytes:
        request: dict[str, Any] = {
            "inputs": [{"datastoreId": ref.datastore_id, "imageSetId": ref.image_set_id}]
        }
        if self.output_s3_uri:
            request["output"] = {"s3Uri": self.output_s3_uri}
        return json.dumps(request, sort_keys=True).encode()


@dataclass(frozen=True)
class Outcome:
    """What happened to one image set: ``submitted``, ``duplicate`` (submitted before), ``in-progress``
    (someone else holds a live claim) or ``skipped`` (not a candidate; ``reason`` says why)."""

    status: str
    datastore_id: str
    image_set_id: str
    version_id: str | None
    reason: str = ""
    inference_id: str | None = None
    input_location: str | None = None
    output_location: str | None = None
    failure_location: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class SubmissionError(RuntimeError):
    """A submission failed and nothing was claimed; re-running (or a Lambda retry) tries again."""


class Submitter:
    """Resolve, pre-filter and submit image sets; the same code in the Lambda function and the back-fill."""

    def __init__(
        self,
        s3: Any,
        runtime: Any,
        ahi: Any,
        target: Target,
        claimant: str,
        *,
        lease_s: float = CLAIM_LEASE_S,
        min_slices: int = MIN_SLICES,
        invocation_timeout_s: int = 3600,
    ) -> None:
        self.s3, self.runtime, self.ahi, self.target = s3, runtime, ahi, target
        self.claimant = claimant
        self.lease_s = lease_s
        self.min_slices = min_slices
        self.invocation_timeout_s = invocation_timeout_s

    # ---- AHI ---------------------------------------------------------------------------------------------
    def resolve(
        self, datastore_id: str, image_set_id: str, version_id: str | None = None
    ) -> ImageSetRef | Outcome:
        """The image set's version (current unless given), or a ``skipped`` outcome when it is gone."""
        params = {"datastoreId": datastore_id, "imageSetId": image_set_id}
        if version_id:
            params["versionId"] = version_id
        try:
            props = self.ahi.get_image_set(**params)
        except Exception as exc:
            if _code(exc) == "ResourceNotFoundException":
                return Outcome("skipped", datastore_id, image_set_id, version_id, f"not found: {exc}")
            raise
        state = str(props.get("imageSetState", ""))
        if state == "DELETED":
            return Outcome(
                "skipped", datastore_id, image_set_id, props.get("versionId"), "image set is DELETED"
            )
        return ImageSetRef(datastore_id, image_set_id, str(props["versionId"]))

    def select(self, ref: ImageSetRef) -> Selection:
        """The metadata pre-filter for ``ref`` (one GetImageSetMetadata call)."""
        blob = self.ahi.get_image_set_metadata(
            datastoreId=ref.datastore_id, imageSetId=ref.image_set_id, versionId=ref.version_id
        )["imageSetMetadataBlob"].read()
        return select_ct(decode_metadata(blob), self.min_slices)

    def process(self, datastore_id: str, image_set_id: str, version_id: str | None = None) -> Outcome:
        """Resolve, pre-filter and submit one image set (the path of one event or one back-fill item)."""
        ref = self.resolve(datastore_id, image_set_id, version_id)
        if isinstance(ref, Outcome):
            return ref
        done = self.submitted(ref)
        if done is not None:
            return done
        selection = self.select(ref)
        if not selection.ok:
            return Outcome("skipped", ref.datastore_id, ref.image_set_id, ref.version_id, selection.reason)
        return self.submit(ref, selection.reason)

    # ---- S3 claim and marker -----------------------------------------------------------------------------
    def _uri(self, key: str) -> str:
        return f"s3://{self.target.bucket}/{key}"

    def submitted(self, ref: ImageSetRef) -> Outcome | None:
        """The ``duplicate`` outcome when ``ref`` was submitted before (its marker exists), else None."""
        try:
            obj = self.s3.get_object(Bucket=self.target.bucket, Key=self.target.marker_key(ref))
        except Exception as exc:
            if _code(exc) in NOT_FOUND:
                return None
            raise
        record = json.loads(obj["Body"].read())
        return Outcome(
            "duplicate",
            ref.datastore_id,
            ref.image_set_id,
            ref.version_id,
            f"submitted before, at {record.get('submittedAt')} by {record.get('claimant')}",
            record.get("InferenceId"),
            record.get("InputLocation"),
            record.get("OutputLocation"),
            record.get("FailureLocation"),
        )

    def _claim(self, ref: ImageSetRef) -> bool:
        """Write the request object if nobody has (or take over a dead claim); False when another submitter
        holds a live one."""
        key = self.target.request_key(ref)
        put = {
            "Bucket": self.target.bucket,
            "Key": key,
            "Body": self.target.body(ref),
            "ContentType": JSON,
            "Metadata": {"claimant": self.claimant[:512]},
        }
        try:
            self.s3.put_object(**put, IfNoneMatch="*")
            return True
        except Exception as exc:
            if _code(exc) not in CONDITION_LOST:
                raise
        try:
            head = self.s3.head_object(Bucket=self.target.bucket, Key=key)
        except Exception as exc:
            if _code(exc) in NOT_FOUND:  # released between our write and our look: try once more
                return self._claim_once_more(put)
            raise
        holder = head.get("Metadata", {}).get("claimant", "")
        age = time.time() - head["LastModified"].timestamp()
        if holder != self.claimant[:512] and age < self.lease_s:
            logger.info("%s is claimed by %s (%.0f s ago); leaving it to them", ref, holder, age)
            return False
        logger.info("%s: taking over the claim of %s (%.0f s old, no marker)", ref, holder or "?", age)
        try:
            self.s3.put_object(**put, IfMatch=head["ETag"])
        except Exception as exc:
            if _code(exc) in CONDITION_LOST + NOT_FOUND:
                return False
            raise
        return True

    def _claim_once_more(self, put: dict[str, Any]) -> bool:
        try:
            self.s3.put_object(**put, IfNoneMatch="*")
        except Exception as exc:
            if _code(exc) in CONDITION_LOST:
                return False
            raise
        return True

    def _release(self, ref: ImageSetRef) -> None:
        try:
            self.s3.delete_object(Bucket=self.target.bucket, Key=self.target.request_key(ref))
        except Exception:  # the claim then expires after the lease; never hide the original error
            logger.exception("%s: could not release the claim; it expires after %.0f s", ref, self.lease_s)

    # ---- submission --------------------------------------------------------------------------------------
    def submit(self, ref: ImageSetRef, reason: str = "") -> Outcome:
        """Claim ``ref``, InvokeEndpointAsync, record the marker (a SubmissionError releases the claim)."""
        done = self.submitted(ref)
        if done is not None:  # also when this claimant submitted it before (a retry of the same event)
            return done
        if not self._claim(ref):
            again = self.submitted(ref)
            if again is not None:
                return again
            return Outcome(
                "in-progress",
                ref.datastore_id,
                ref.image_set_id,
                ref.version_id,
                "claimed by another submitter",
            )
        input_uri = self._uri(self.target.request_key(ref))
        try:
            response = self.runtime.invoke_endpoint_async(
                EndpointName=self.target.endpoint_name,
                InputLocation=input_uri,
                ContentType=JSON,
                Accept=JSON,
                InferenceId=ref.inference_id,
                InvocationTimeoutSeconds=self.invocation_timeout_s,
            )
        except Exception as exc:
            self._release(ref)
            raise SubmissionError(self._explain(ref, exc)) from exc
        record = {
            "InferenceId": response.get("InferenceId", ref.inference_id),
            "InputLocation": input_uri,
            "OutputLocation": response.get("OutputLocation"),
            "FailureLocation": response.get("FailureLocation"),
            "submittedAt": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "claimant": self.claimant,
            "endpoint": self.target.endpoint_name,
        }
        self.s3.put_object(
            Bucket=self.target.bucket,
            Key=self.target.marker_key(ref),
            Body=json.dumps(record, indent=2).encode(),
            ContentType=JSON,
        )
        logger.info("%s submitted as %s -> %s", ref, record["InferenceId"], record["OutputLocation"])
        return Outcome(
            "submitted",
            ref.datastore_id,
            ref.image_set_id,
            ref.version_id,
            reason,
            str(record["InferenceId"]),
            input_uri,
            record["OutputLocation"],
            record["FailureLocation"],
        )

    def _explain(self, ref: ImageSetRef, exc: BaseException) -> str:
        code, endpoint = _code(exc), self.target.endpoint_name
        if code in ("ValidationError", "ValidationException") and "not found" in str(exc).lower():
            return (
                f"{ref}: endpoint {endpoint} not found ({exc}); deploy it with `ahi-spleen deploy-async` "
                "and re-run (nothing was submitted)"
            )
        if code in RETRYABLE_RUNTIME:
            return f"{ref}: endpoint {endpoint} refused the request ({code}: {exc}); nothing submitted, retry"
        return f"{ref}: InvokeEndpointAsync on {endpoint} failed ({code or type(exc).__name__}: {exc})"

"""Resource names derived from one ``--name`` prefix, so every re-run finds what an earlier run created.

SageMaker models and endpoint configs are immutable, so their names carry a short hash of their settings: a
re-run with the same settings finds the same names (nothing changes); changed settings give new names and the
endpoint is updated.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")


def settings_hash(spec: Any, length: int = 8) -> str:
    """Stable short hash of a JSON-able spec (key order does not matter)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Names:
    """All names for one deployment ``name`` (lower-case letters, digits and dashes, at most 32
    characters)."""

    name: str

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(
                f"--name {self.name!r} is not valid: use 1-32 lower-case letters, digits or dashes, "
                "starting and ending with a letter or digit (it prefixes ECR, SageMaker, S3 and IAM names)"
            )

    # build pipeline
    @property
    def ecr_repository(self) -> str:
        return self.name

    @property
    def codebuild_project(self) -> str:
        return f"{self.name}-build"

    @property
    def pipeline(self) -> str:
        return f"{self.name}-pipeline"

    # IAM roles (one per AWS service principal)
    def role(self, kind: str) -> str:
        return f"{self.name}-{kind}"

    # S3 layout under the deployment's bucket
    @property
    def s3_root(self) -> str:
        return f"{self.name}/"

    @property
    def source_key(self) -> str:
        return f"{self.name}/source/source.zip"

    @property
    def pipeline_artifacts_prefix(self) -> str:
        return f"{self.name}/pipeline-artifacts"

    @property
    def model_prefix(self) -> str:
        """The MME ``ModelDataUrl`` prefix: every archive under it is a ``TargetModel``."""
        return f"{self.name}/models/"

    def model_key(self, archive_name: str = "model.tar.gz") -> str:
        return f"{self.model_prefix}{archive_name}"

    @property
    def async_input_prefix(self) -> str:
        return f"{self.name}/async-input/"

    @property
    def async_output_prefix(self) -> str:
        return f"{self.name}/async-output/"

    @property
    def async_failure_prefix(self) -> str:
        return f"{self.name}/async-failure/"

    @property
    def dicom_input_prefix(self) -> str:
        return f"{self.name}/dicom-input/"

    @property
    def import_output_prefix(self) -> str:
        return f"{self.name}/import-output/"

    # SageMaker
    def endpoint(self, kind: str) -> str:
        """Endpoint name for ``kind`` in ``{"mme", "rt", "async"}``."""
        return f"{self.name}-{kind}"

    def model(self, kind: str, spec: Any) -> str:
        return f"{self.endpoint(kind)}-{settings_hash(spec)}"

    def endpoint_config(self, kind: str, spec: Any) -> str:
        return f"{self.endpoint(kind)}-cfg-{settings_hash(spec)}"

    # async scaling and notifications
    def topic(self, outcome: str) -> str:
        return f"{self.name}-async-{outcome}"

    @property
    def backlog_policy(self) -> str:
        return f"{self.name}-async-backlog-tracking"

    @property
    def scale_from_zero_policy(self) -> str:
        return f"{self.name}-async-scale-from-zero"

    @property
    def scale_from_zero_alarm(self) -> str:
        return f"{self.name}-async-has-backlog-without-capacity"

    # HealthImaging
    @property
    def datastore(self) -> str:
        return f"{self.name}-datastore"

    # event trigger and back-fill (trigger.submission: one request object per image set version)
    @property
    def request_prefix(self) -> str:
        return f"{self.name}/requests/"

    @property
    def trigger_function(self) -> str:
        return f"{self.name}-trigger"

    @property
    def trigger_rule(self) -> str:
        return f"{self.name}-ahi-events"

    @property
    def trigger_dlq(self) -> str:
        return f"{self.name}-trigger-dlq"

    @property
    def transform_output_prefix(self) -> str:
        return f"{self.name}/transform-output/"

    @property
    def transform_input_prefix(self) -> str:
        return f"{self.name}/transform-input/"

    def transform_job(self, spec: Any) -> str:
        return f"{self.name}-transform-{settings_hash(spec)}"

    def inference_component(self, archive_name: str) -> str:
        """Component name for one model archive (``model.tar.gz`` → ``<name>-ic-model``)."""
        stem = archive_name.removesuffix(".tar.gz").lower()
        stem = re.sub(r"[^a-z0-9-]+", "-", stem).strip("-") or "model"
        return f"{self.name}-ic-{stem}"[:63].rstrip("-")

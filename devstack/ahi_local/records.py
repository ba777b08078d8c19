"""Typed records of the local store (datastores, image sets and versions, import jobs) and their JSON."""

from __future__ import annotations

import dataclasses
from typing import Any

from .ids import ACCOUNT_ID, REGION, datastore_arn, image_set_arn

ARCHIVE_AFTER_S = 30 * 24 * 3600.0  # AHI moves image sets not accessed for 30 days to the archive tier


def storage_tier(last_accessed_at: float | None, created_at: float, now: float) -> str:
    """``FREQUENT_ACCESS`` until an image set goes 30 days without access, then ``ARCHIVE_INSTANT_ACCESS``
    (AHI's intelligent tiering; any access moves it back)."""
    idle = now - (last_accessed_at or created_at)
    return "ARCHIVE_INSTANT_ACCESS" if idle > ARCHIVE_AFTER_S else "FREQUENT_ACCESS"


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@dataclasses.dataclass
class DatastoreRecord:
    datastore_id: str
    name: str
    status: str
    created_at: float
    updated_at: float
    kms_key_arn: str | None = None
    lambda_authorizer_arn: str | None = None
    lossless_storage_format: str = "HTJ2K"
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    client_token: str | None = None
    region: str = REGION
    account_id: str = ACCOUNT_ID
    active_at: float | None = None  # while CREATING: when it becomes ACTIVE

    @property
    def arn(self) -> str:
        return datastore_arn(self.datastore_id, self.region, self.account_id)

    def settle(self, now: float) -> bool:
        """CREATING → ACTIVE once its time has come; True when the record changed."""
        if self.status == "CREATING" and self.active_at is not None and now >= self.active_at:
            self.status, self.updated_at, self.active_at = "ACTIVE", self.active_at, None
            return True
        return False

    def summary(self) -> dict[str, Any]:
        return {
            "datastoreId": self.datastore_id,
            "datastoreName": self.name,
            "datastoreStatus": self.status,
            "datastoreArn": self.arn,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }

    def properties(self) -> dict[str, Any]:
        props = self.summary()
        props.update(
            _drop_none(
                {
                    "kmsKeyArn": self.kms_key_arn,
                    "lambdaAuthorizerArn": self.lambda_authorizer_arn,
                    "losslessStorageFormat": self.lossless_storage_format,
                }
            )
        )
        return props


@dataclasses.dataclass
class VersionRecord:
    version_id: int
    created_at: float
    updated_at: float
    workflow_status: str
    is_primary: bool
    message: str | None = None
    forced: bool | None = None


@dataclasses.dataclass
class ImageSetRecord:
    image_set_id: str
    datastore_id: str
    created_at: float
    updated_at: float
    state: str
    workflow_status: str
    is_primary: bool
    versions: list[VersionRecord]
    dicom_tags: dict[str, Any]
    frame_ids: list[str]
    sop_uids: list[str]
    deleted_at: float | None = None
    message: str | None = None
    last_accessed_at: float | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    region: str = REGION
    account_id: str = ACCOUNT_ID
    # A transition in progress (update, copy, delete): at ``settle_at`` the image set takes ``settle_state`` /
    # ``settle_workflow`` (and so does the latest version when ``settle_version`` is set).
    settle_at: float | None = None
    settle_state: str | None = None
    settle_workflow: str | None = None
    settle_version: bool = False

    @property
    def latest_version(self) -> int:
        return self.versions[-1].version_id

    @property
    def arn(self) -> str:
        return image_set_arn(self.datastore_id, self.image_set_id, self.region, self.account_id)

    def lock(self, workflow: str, final_workflow: str, settle_at: float, final_state: str = "ACTIVE",
             version: bool = False) -> None:
        """Enter ``LOCKED``/``workflow`` until ``settle_at``, then ``final_state``/``final_workflow``."""
        self.state, self.workflow_status = "LOCKED", workflow
        self.settle_at, self.settle_state, self.settle_workflow = settle_at, final_state, final_workflow
        self.settle_version = version
        if version:
            self.versions[-1].workflow_status = workflow

    def settle(self, now: float) -> bool:
        """Finish the transition in progress if its time has come; True when the record changed."""
        if self.settle_at is None or now < self.settle_at:
            return False
        self.state, self.workflow_status = str(self.settle_state), str(self.settle_workflow)
        if self.settle_version:
            self.versions[-1].workflow_status = self.workflow_status
            self.versions[-1].updated_at = self.settle_at
        if self.state == "DELETED":
            self.deleted_at = self.settle_at
        self.updated_at = self.settle_at
        self.settle_at = self.settle_state = self.settle_workflow = None
        self.settle_version = False
        return True

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ImageSetRecord:
        value = dict(value)
        value["versions"] = [VersionRecord(**v) for v in value["versions"]]
        return cls(**value)

    def get_image_set(self, now: float, version: VersionRecord | None = None) -> dict[str, Any]:
        version = version or self.versions[-1]
        latest = version is self.versions[-1]
        return _drop_none(
            {
                "datastoreId": self.datastore_id,
                "imageSetId": self.image_set_id,
                "versionId": str(version.version_id),
                "imageSetState": self.state,
                "imageSetWorkflowStatus": self.workflow_status if latest else version.workflow_status,
                "createdAt": self.created_at,
                "updatedAt": version.updated_at,
                "deletedAt": self.deleted_at,
                "message": version.message,
                "imageSetArn": self.arn,
                "overrides": {"forced": version.forced} if version.forced is not None else None,
                "isPrimary": version.is_primary,
                "lastAccessedAt": self.last_accessed_at,
                "storageTier": storage_tier(self.last_accessed_at, self.created_at, now),
            }
        )

    def version_properties(self, version: VersionRecord) -> dict[str, Any]:
        return _drop_none(
            {
                "imageSetId": self.image_set_id,
                "versionId": str(version.version_id),
                "imageSetState": self.state,
                "ImageSetWorkflowStatus": version.workflow_status,
                "createdAt": version.created_at,
                "updatedAt": version.updated_at,
                "deletedAt": self.deleted_at,
                "message": version.message,
                "overrides": {"forced": version.forced} if version.forced is not None else None,
                "isPrimary": version.is_primary,
            }
        )

    def short_properties(self, workflow_status: str | None = None) -> dict[str, Any]:
        """``CopySourceImageSetProperties`` / ``CopyDestinationImageSetProperties``."""
        return {
            "imageSetId": self.image_set_id,
            "latestVersionId": str(self.latest_version),
            "imageSetState": self.state,
            "imageSetWorkflowStatus": workflow_status or self.workflow_status,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "imageSetArn": self.arn,
        }

    def summary(self, now: float) -> dict[str, Any]:
        return _drop_none(
            {
                "imageSetId": self.image_set_id,
                "version": self.latest_version,
                "createdAt": self.created_at,
                "updatedAt": self.updated_at,
                "lastAccessedAt": self.last_accessed_at,
                "storageTier": storage_tier(self.last_accessed_at, self.created_at, now),
                "DICOMTags": self.dicom_tags,
                "isPrimary": self.is_primary,
            }
        )


@dataclasses.dataclass
class JobRecord:
    job_id: str
    job_name: str
    datastore_id: str
    status: str
    data_access_role_arn: str
    input_s3_uri: str
    output_s3_uri: str
    submitted_at: float
    client_token: str
    ended_at: float | None = None
    message: str | None = None

    @property
    def job_output_uri(self) -> str:
        """The job's own output folder, ``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>/``, which AWS
        answers as ``jobProperties.outputS3Uri`` (not the folder the caller passed in)."""
        return f"{self.output_s3_uri.rstrip('/')}/{self.datastore_id}-DicomImport-{self.job_id}/"

    def properties(self) -> dict[str, Any]:
        return _drop_none(
            {
                "jobId": self.job_id,
                "jobName": self.job_name,
                "jobStatus": self.status,
                "datastoreId": self.datastore_id,
                "dataAccessRoleArn": self.data_access_role_arn,
                "endedAt": self.ended_at,
                "submittedAt": self.submitted_at,
                "inputS3Uri": self.input_s3_uri,
                "outputS3Uri": self.job_output_uri,
                "message": self.message,
            }
        )

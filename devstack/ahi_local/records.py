"""Typed records of the local store (datastores, image sets and versions, import jobs) and their JSON."""

from __future__ import annotations

import dataclasses
from typing import Any

from .ids import datastore_arn, image_set_arn


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

    @property
    def arn(self) -> str:
        return datastore_arn(self.datastore_id)

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

    @property
    def latest_version(self) -> int:
        return self.versions[-1].version_id

    @property
    def arn(self) -> str:
        return image_set_arn(self.datastore_id, self.image_set_id)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ImageSetRecord:
        value = dict(value)
        value["versions"] = [VersionRecord(**v) for v in value["versions"]]
        return cls(**value)

    def get_image_set(self, version: VersionRecord | None = None) -> dict[str, Any]:
        version = version or self.versions[-1]
        return _drop_none(
            {
                "datastoreId": self.datastore_id,
                "imageSetId": self.image_set_id,
                "versionId": str(version.version_id),
                "imageSetState": self.state,
                "imageSetWorkflowStatus": version.workflow_status,
                "createdAt": self.created_at,
                "updatedAt": version.updated_at,
                "deletedAt": self.deleted_at,
                "message": version.message,
                "imageSetArn": self.arn,
                "overrides": {"forced": version.forced} if version.forced is not None else None,
                "isPrimary": version.is_primary,
                "lastAccessedAt": self.last_accessed_at,
                "storageTier": "FREQUENT_ACCESS",
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

    def summary(self) -> dict[str, Any]:
        return _drop_none(
            {
                "imageSetId": self.image_set_id,
                "version": self.latest_version,
                "createdAt": self.created_at,
                "updatedAt": self.updated_at,
                "lastAccessedAt": self.last_accessed_at,
                "storageTier": "FREQUENT_ACCESS",
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
                "outputS3Uri": self.output_s3_uri,
                "message": self.message,
            }
        )

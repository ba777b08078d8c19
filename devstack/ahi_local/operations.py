"""The AWS HealthImaging operations, as plain functions of validated request parameters.

Each handler takes the request as the dict botocore would have serialised (members of the operation's input
shape, URI/query/body already merged and type-checked by :mod:`devstack.ahi_local.server`) and returns the
output dict, or :class:`RawResponse` for the streaming blob outputs.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from ahi_connector.s3uri import S3Uri

from . import metadata, update_rules
from .errors import ConflictError, NotFoundError, ValidationError
from .ids import check_id, new_id, now, parse_arn
from .importer import ImportRunner
from .records import DatastoreRecord, ImageSetRecord, JobRecord
from .search import paginate, search
from .store import FrameLocation, Store

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RawResponse:
    body: bytes
    content_type: str
    content_encoding: str | None = None


def _json_blob(value: Any, what: str) -> dict[str, Any]:
    """Decode a blob member (base64 on the wire) holding a JSON object."""
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else bytes(value)
        decoded = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValidationError(f"{what} is not a JSON object: {exc}") from exc
    if not isinstance(decoded, dict):
        raise ValidationError(f"{what} must be a JSON object, got {type(decoded).__name__}")
    return decoded


def merge_update(document: dict[str, Any], updates: dict[str, Any]) -> None:
    """Deep-merge ``updates`` into ``document`` (objects merge, other values replace)."""
    for key, value in updates.items():
        if key == "SchemaVersion":
            continue
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            merge_update(document[key], value)
        else:
            document[key] = value


def apply_removal(document: dict[str, Any], removals: dict[str, Any], path: str = "") -> None:
    """Remove what ``removals`` names: an empty object or a non-object value removes that key; a non-empty
    object descends. Naming something that does not exist is a ValidationException."""
    for key, value in removals.items():
        if key == "SchemaVersion" and not path:
            continue
        if key not in document:
            raise ValidationError(f"removableAttributes names {path}{key}, which the image set does not have")
        if isinstance(value, dict) and value and isinstance(document[key], dict):
            apply_removal(document[key], value, f"{path}{key}.")
        else:
            del document[key]


class Operations:
    """Handlers by operation name; they share one :class:`Store` and one :class:`ImportRunner`."""

    def __init__(self, store: Store, runner: ImportRunner) -> None:
        self.store = store
        self.runner = runner
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            name: getattr(self, name) for name in dir(self) if name[:1].isupper()
        }

    # ---- datastores ----------------------------------------------------------------------------------
    def CreateDatastore(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 (AWS operation names)
        record, created = self.store.create_datastore(
            p.get("datastoreName") or f"datastore-{now():.0f}",
            p["clientToken"],
            kms_key_arn=p.get("kmsKeyArn"),
            lambda_authorizer_arn=p.get("lambdaAuthorizerArn"),
            lossless_storage_format=p.get("losslessStorageFormat") or "HTJ2K",
            tags=dict(p.get("tags") or {}),
        )
        status = "CREATING" if created else record.status
        return {"datastoreId": record.datastore_id, "datastoreStatus": status}

    def GetDatastore(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"datastoreProperties": self.store.datastore(p["datastoreId"]).properties()}

    def ListDatastores(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        records = sorted(self.store.all_datastores(), key=lambda r: (r.created_at, r.datastore_id))
        if p.get("datastoreStatus"):
            records = [r for r in records if r.status == p["datastoreStatus"]]
        page, token = paginate(records, p.get("maxResults"), p.get("nextToken"), "ListDatastores")
        out: dict[str, Any] = {"datastoreSummaries": [r.summary() for r in page]}
        if token:
            out["nextToken"] = token
        return out

    def DeleteDatastore(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        record = self.store.delete_datastore(p["datastoreId"])
        return {"datastoreId": record.datastore_id, "datastoreStatus": "DELETING"}

    # ---- import jobs ---------------------------------------------------------------------------------
    def StartDICOMImportJob(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        datastore = self.store.active_datastore(p["datastoreId"], "StartDICOMImportJob")
        for member in ("inputS3Uri", "outputS3Uri"):
            try:
                S3Uri.parse(p[member], member)
            except ValueError as exc:
                raise ValidationError(f"{member}: {exc}") from exc
        for job in self.store.jobs[datastore.datastore_id].values():
            if job.client_token == p["clientToken"]:
                return {
                    "datastoreId": job.datastore_id,
                    "jobId": job.job_id,
                    "jobStatus": job.status,
                    "submittedAt": job.submitted_at,
                }
        job = JobRecord(
            job_id=new_id(),
            job_name=p.get("jobName") or "import",
            datastore_id=datastore.datastore_id,
            status="SUBMITTED",
            data_access_role_arn=p["dataAccessRoleArn"],
            input_s3_uri=p["inputS3Uri"],
            output_s3_uri=p["outputS3Uri"],
            submitted_at=now(),
            client_token=p["clientToken"],
        )
        self.runner.submit(job)
        return {
            "datastoreId": job.datastore_id,
            "jobId": job.job_id,
            "jobStatus": "SUBMITTED",
            "submittedAt": job.submitted_at,
        }

    def GetDICOMImportJob(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"jobProperties": self.store.job(p["datastoreId"], p["jobId"]).properties()}

    def ListDICOMImportJobs(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        self.store.datastore(p["datastoreId"])
        jobs = sorted(self.store.jobs[p["datastoreId"]].values(), key=lambda j: (-j.submitted_at, j.job_id))
        if p.get("jobStatus"):
            jobs = [j for j in jobs if j.status == p["jobStatus"]]
        page, token = paginate(jobs, p.get("maxResults"), p.get("nextToken"), "ListDICOMImportJobs")
        summaries = []
        for job in page:
            props = job.properties()
            summaries.append({k: v for k, v in props.items() if k not in ("inputS3Uri", "outputS3Uri")})
        out: dict[str, Any] = {"jobSummaries": summaries}
        if token:
            out["nextToken"] = token
        return out

    # ---- image sets ----------------------------------------------------------------------------------
    def SearchImageSets(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        records = self.store.live_image_sets(p["datastoreId"])
        out = search(records, p.get("searchCriteria"), p.get("maxResults"), p.get("nextToken"))
        counts: dict[str, list[int]] = {}
        for record in records:
            if record.is_primary:
                study = counts.setdefault(str(record.dicom_tags.get("DICOMStudyInstanceUID")), [0, 0])
                study[0] += 1
                study[1] += len(record.sop_uids)
        for summary in out["imageSetsMetadataSummaries"]:
            found = counts.get(str(summary["DICOMTags"].get("DICOMStudyInstanceUID")))
            if found:
                summary["DICOMTags"]["DICOMNumberOfStudyRelatedSeries"] = found[0]
                summary["DICOMTags"]["DICOMNumberOfStudyRelatedInstances"] = found[1]
        return out

    def GetImageSet(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        record = self.store.image_set(p["datastoreId"], p["imageSetId"])
        return record.get_image_set(now(), self.store.version(record, p.get("versionId")))

    def GetImageSetMetadata(self, p: dict[str, Any]) -> RawResponse:  # noqa: N802
        record = self.store.image_set(p["datastoreId"], p["imageSetId"])
        version = self.store.version(record, p.get("versionId"))
        self.store.touch(record)
        return RawResponse(self.store.metadata_blob(record, version.version_id), "application/json", "gzip")

    def frame_location(self, p: dict[str, Any]) -> FrameLocation:
        info = p.get("imageFrameInformation") or {}
        frame_id = info.get("imageFrameId")
        if not frame_id:
            raise ValidationError("imageFrameInformation.imageFrameId is required")
        location = self.store.frame(p["datastoreId"], p["imageSetId"], frame_id)
        self.store.touch(self.store.image_set(p["datastoreId"], p["imageSetId"]))
        return location

    def GetImageFrame(self, p: dict[str, Any]) -> RawResponse:  # noqa: N802
        location = self.frame_location(p)
        return RawResponse(location.path.read_bytes(), location.content_type)

    def ListImageSetVersions(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        record = self.store.image_set(p["datastoreId"], p["imageSetId"])
        versions = [record.version_properties(v) for v in reversed(record.versions)]
        page, token = paginate(versions, p.get("maxResults"), p.get("nextToken"), "ListImageSetVersions")
        out: dict[str, Any] = {"imageSetPropertiesList": page}
        if token:
            out["nextToken"] = token
        return out

    def DeleteImageSet(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        record = self.store.delete_image_set(p["datastoreId"], p["imageSetId"])
        return {
            "datastoreId": record.datastore_id,
            "imageSetId": record.image_set_id,
            "imageSetState": record.state,
            "imageSetWorkflowStatus": record.workflow_status,
        }

    def _updated_document(
        self, record: ImageSetRecord, updates: dict[str, Any], force: bool, study_only: bool
    ) -> dict[str, Any]:
        """The document ``record`` gets from ``updates`` (checked against AHI's rules; nothing written)."""
        store = self.store
        if updates.get("revertToVersionId"):
            return store.document(record, int(store.version(record, updates["revertToVersionId"]).version_id))
        document = store.document(record)
        dicom_updates = updates.get("DICOMUpdates") or {}
        if not dicom_updates:
            raise ValidationError("updateImageSetMetadataUpdates needs DICOMUpdates or revertToVersionId")
        if dicom_updates.get("removableAttributes"):
            removals = _json_blob(dicom_updates["removableAttributes"], "removableAttributes")
            update_rules.check_removal(removals, image_set_id=record.image_set_id, force=force)
            apply_removal(document, removals)
        if dicom_updates.get("updatableAttributes"):
            changes = _json_blob(dicom_updates["updatableAttributes"], "updatableAttributes")
            if study_only:
                update_rules.study_level_only(changes)
            update_rules.check_update(
                changes,
                document,
                image_set_id=record.image_set_id,
                force=force,
                primary=record.is_primary,
            )
            merge_update(document, changes)
            update_rules.refile(document)
        if not metadata.flatten_document(document):
            raise ValidationError(f"update would leave image set {record.image_set_id} without instances")
        return document

    def UpdateImageSetMetadata(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        store = self.store
        force = bool(p.get("force"))
        with store.lock:
            record = store.image_set(p["datastoreId"], p["imageSetId"])
            store.check_unlocked(record, "UpdateImageSetMetadata")
            store.check_latest(record, p["latestVersionId"], "UpdateImageSetMetadata")
            updates = p["updateImageSetMetadataUpdates"]
            targets = [record]
            include_study = bool(p.get("includeStudyImageSets"))
            if include_study:
                if updates.get("revertToVersionId"):
                    raise ValidationError("includeStudyImageSets cannot be combined with revertToVersionId")
                study_uid = record.dicom_tags.get("DICOMStudyInstanceUID")
                for other in store.live_image_sets(record.datastore_id):
                    if (other is not record and other.is_primary
                            and other.dicom_tags.get("DICOMStudyInstanceUID") == study_uid):  # fmt: skip
                        store.check_unlocked(other, "UpdateImageSetMetadata (includeStudyImageSets)")
                        targets.append(other)
            # Every image set is checked before any is written: the update is atomic across the study.
            documents = [self._updated_document(t, updates, force, include_study) for t in targets]
            committed = []
            for target, document in zip(targets, documents, strict=True):

                def build(_id: str, doc: dict[str, Any] = document) -> dict[str, Any]:
                    return doc

                done = store.commit_version(
                    target.datastore_id,
                    target.image_set_id,
                    build,
                    "UPDATING",
                    forced=force or None,
                )
                store.lock_image_set(done, "UPDATING", "UPDATED", version=True)
                committed.append(done)
            record = committed[0]
        return {
            "datastoreId": record.datastore_id,
            "imageSetId": record.image_set_id,
            "latestVersionId": str(record.latest_version),
            "imageSetState": record.state,
            "imageSetWorkflowStatus": record.workflow_status,
            "createdAt": record.created_at,
            "updatedAt": record.updated_at,
        }

    def CopyImageSet(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        store = self.store
        info = p["copyImageSetInformation"]
        with store.lock:
            source = store.image_set(p["datastoreId"], p["sourceImageSetId"])
            store.check_unlocked(source, "CopyImageSet source")
            src_info = info["sourceImageSet"]
            store.check_latest(source, src_info["latestVersionId"], "CopyImageSet source")
            instances = metadata.flatten_document(store.document(source))
            copies = (src_info.get("DICOMCopies") or {}).get("copiableAttributes")
            if copies:
                instances = _select_instances(instances, copies, source)
            dest_info = info.get("destinationImageSet")
            target = None
            existing: list[metadata.FlatInstance] = []
            if dest_info:
                dest = store.image_set(
                    p["datastoreId"], check_id(dest_info["imageSetId"], "destination imageSetId")
                )
                store.check_unlocked(dest, "CopyImageSet destination")
                store.check_latest(dest, dest_info["latestVersionId"], "CopyImageSet destination")
                target = dest.image_set_id
                existing = metadata.flatten_document(store.document(dest))
            instances = update_rules.copy_into(
                instances,
                existing,
                force=bool(p.get("force")),
                source_id=source.image_set_id,
                destination_id=str(target),
            )
            uids = {i.sop_uid for i in instances}
            merged = [i for i in existing if i.sop_uid not in uids] + instances
            ds_id = source.datastore_id
            primary = True if p.get("promoteToPrimary") else (None if target else False)
            dest_record = store.commit_version(
                ds_id,
                target,
                lambda is_id: metadata.build_document(ds_id, is_id, merged),
                "COPYING",
                is_primary=primary,
                forced=bool(p.get("force")) or None,
            )
            store.lock_image_set(source, "COPYING_WITH_READ_ONLY_ACCESS", source.workflow_status)
            store.lock_image_set(dest_record, "COPYING", "COPIED", version=True)
        return {
            "datastoreId": ds_id,
            "sourceImageSetProperties": source.short_properties(),
            "destinationImageSetProperties": dest_record.short_properties(),
        }

    # ---- tags ----------------------------------------------------------------------------------------
    def _resource(self, arn: str) -> DatastoreRecord | ImageSetRecord:
        datastore_id, image_set_id = parse_arn(arn)
        if f":{self.store.region}:{self.store.account_id}:" not in arn:
            raise NotFoundError(
                f"resource {arn} not found: this service is region {self.store.region}, account "
                f"{self.store.account_id}"
            )
        try:
            if image_set_id:
                return self.store.image_set(datastore_id, image_set_id)
            return self.store.datastore(datastore_id)
        except NotFoundError as exc:
            raise NotFoundError(f"resource {arn} not found") from exc

    def _save(self, resource: DatastoreRecord | ImageSetRecord) -> None:
        if isinstance(resource, DatastoreRecord):
            self.store.save_datastore(resource)
        else:
            self.store.save_image_set(resource)

    def TagResource(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        with self.store.lock:
            resource = self._resource(p["resourceArn"])
            resource.tags.update(p["tags"])
            self._save(resource)
        return {}

    def UntagResource(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        with self.store.lock:
            resource = self._resource(p["resourceArn"])
            for key in p["tagKeys"]:
                resource.tags.pop(key, None)
            self._save(resource)
        return {}

    def ListTagsForResource(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"tags": dict(self._resource(p["resourceArn"]).tags)}


def _select_instances(
    instances: list[metadata.FlatInstance], copiable: str, source: ImageSetRecord
) -> list[metadata.FlatInstance]:
    """Instances named by ``copiableAttributes`` (``{"Study": {"Series": {uid: {"Instances": {...}}}}}``)."""
    try:
        spec = json.loads(copiable)
        series = spec["Study"]["Series"]
        wanted = {(s_uid, i_uid) for s_uid, s in series.items() for i_uid in (s.get("Instances") or {})}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValidationError(
            f"copiableAttributes is not a Study/Series/Instances JSON object: {exc}"
        ) from exc
    chosen = [i for i in instances if (i.series_uid, i.sop_uid) in wanted]
    missing = wanted - {(i.series_uid, i.sop_uid) for i in chosen}
    if missing:
        raise ConflictError(f"image set {source.image_set_id} has no instances {sorted(missing)[:3]}")
    return chosen

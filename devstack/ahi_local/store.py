"""The durable store behind ahi-local: datastores, image sets (versioned metadata), frames and import jobs.

Layout under ``data_dir``::

    datastores/<datastoreId>/datastore.json
    datastores/<datastoreId>/jobs/<jobId>.json
    datastores/<datastoreId>/imagesets/<imageSetId>/imageset.json      (record: versions, frame IDs, tags)
    datastores/<datastoreId>/imagesets/<imageSetId>/v<N>.json.gz       (GetImageSetMetadata body of version N)
    datastores/<datastoreId>/frames/<id[:2]>/<frameId>.<jph|jpg|j2c|bin>   (GetImageFrame body; ext = type)

Every file is written atomically (temp file + fsync + rename); frames first, then metadata, then the record
that points at them, so a crash never leaves a record naming missing data. Everything is loaded into memory
indexes at start; GetImageFrame is a dictionary lookup plus one file read.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gzip
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from . import metadata
from .errors import ConflictError, NotFoundError, StorageError
from .frames import CONTENT_TYPES, EXTENSIONS
from .ids import ACCOUNT_ID, REGION, check_id, new_id, now
from .records import DatastoreRecord, ImageSetRecord, JobRecord, VersionRecord
from .storage import gzip_json, read_json, write_bytes_atomic, write_json_atomic

logger = logging.getLogger(__name__)

LOCK_WAIT_S = 15.0


@dataclasses.dataclass(frozen=True)
class FrameLocation:
    path: Path
    content_type: str


def _lock_data_dir(root: Path, wait_s: float = LOCK_WAIT_S) -> IO[bytes]:
    """Hold an exclusive lock on ``root/.lock`` for the life of the process (the OS releases it on exit), so
    two servers never write one store. Waits a while for a previous process that is still shutting down."""
    handle = open(root / ".lock", "ab")  # noqa: SIM115 (kept open on purpose)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise RuntimeError(
                    f"data dir {root} is in use by another ahi-local process; stop it or use another "
                    "--data-dir"
                ) from None
            time.sleep(0.1)


class Store:
    """Thread-safe store; one instance per server process owns ``data_dir``."""

    def __init__(
        self,
        data_dir: str | Path,
        lock_wait_s: float = LOCK_WAIT_S,
        transition_s: float = 0.0,
        datastore_creation_s: float = 0.0,
        region: str = REGION,
        account_id: str = ACCOUNT_ID,
    ) -> None:
        self.transition_s = transition_s
        self.datastore_creation_s = datastore_creation_s
        self.region = region
        self.account_id = account_id
        self.root = Path(data_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_data_dir(self.root, lock_wait_s)
        self.lock = threading.RLock()
        self.datastores: dict[str, DatastoreRecord] = {}
        self.image_sets: dict[str, dict[str, ImageSetRecord]] = {}
        self.jobs: dict[str, dict[str, JobRecord]] = {}
        self.frames: dict[str, dict[str, FrameLocation]] = {}
        self._frame_sets: dict[tuple[str, str], frozenset[str]] = {}
        self._load()

    # ---- paths ---------------------------------------------------------------------------------------
    def _ds_dir(self, datastore_id: str) -> Path:
        return self.root / "datastores" / datastore_id

    def _is_dir(self, datastore_id: str, image_set_id: str) -> Path:
        return self._ds_dir(datastore_id) / "imagesets" / image_set_id

    def _frame_path(self, datastore_id: str, frame_id: str, content_type: str) -> Path:
        return self._ds_dir(datastore_id) / "frames" / frame_id[:2] / f"{frame_id}.{EXTENSIONS[content_type]}"

    # ---- loading -------------------------------------------------------------------------------------
    def _load(self) -> None:
        base = self.root / "datastores"
        if not base.is_dir():
            return
        for ds_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            record_path = ds_dir / "datastore.json"
            if not record_path.is_file():
                logger.warning("ignoring %s: no datastore.json (incomplete create or delete)", ds_dir)
                continue
            record = DatastoreRecord(**read_json(record_path))
            ds_id = record.datastore_id
            self.datastores[ds_id] = record
            self.image_sets[ds_id] = {}
            self.jobs[ds_id] = {}
            self.frames[ds_id] = {}
            for path in sorted((ds_dir / "imagesets").glob("*/imageset.json")):
                image_set = ImageSetRecord.from_json(read_json(path))
                self.image_sets[ds_id][image_set.image_set_id] = image_set
                self._frame_sets[(ds_id, image_set.image_set_id)] = frozenset(image_set.frame_ids)
            for path in sorted((ds_dir / "jobs").glob("*.json")):
                job = JobRecord(**read_json(path))
                self.jobs[ds_id][job.job_id] = job
            frames_dir = ds_dir / "frames"
            if frames_dir.is_dir():
                for path in frames_dir.glob("*/*.*"):
                    ctype = CONTENT_TYPES.get(path.suffix.lstrip("."))
                    if ctype:
                        self.frames[ds_id][path.stem] = FrameLocation(path, ctype)
        logger.info(
            "loaded %d datastores, %d image sets, %d frames from %s",
            len(self.datastores),
            sum(len(v) for v in self.image_sets.values()),
            sum(len(v) for v in self.frames.values()),
            self.root,
        )
        self.collect_garbage()

    # ---- datastores ----------------------------------------------------------------------------------
    def create_datastore(self, name: str, client_token: str, **options: Any) -> tuple[DatastoreRecord, bool]:
        """Create a datastore, or return the one this ``client_token`` created before (AWS idempotency: the
        same token with other parameters is a ConflictException). The flag says whether it is new."""
        with self.lock:
            for existing in self.datastores.values():
                if existing.client_token == client_token:
                    # Tags are left out: TagResource may have changed them since.
                    asked = {"name": name, **{k: v for k, v in options.items() if k != "tags"}}
                    had = {key: getattr(existing, key) for key in asked}
                    if asked != had:
                        raise ConflictError(
                            f"clientToken {client_token} already created datastore {existing.datastore_id} "
                            "with other parameters; use a new clientToken for a new datastore"
                        )
                    return existing, False
            ts = now()
            record = DatastoreRecord(
                new_id(),
                name,
                "CREATING",
                ts,
                ts,
                client_token=client_token,
                region=self.region,
                account_id=self.account_id,
                active_at=ts + self.datastore_creation_s,
                **options,
            )
            ds_id = record.datastore_id
            write_json_atomic(self._ds_dir(ds_id) / "datastore.json", dataclasses.asdict(record))
            self.datastores[ds_id] = record
            self.image_sets[ds_id], self.jobs[ds_id], self.frames[ds_id] = {}, {}, {}
            return record, True

    def datastore(self, datastore_id: str) -> DatastoreRecord:
        check_id(datastore_id, "datastoreId")
        record = self.datastores.get(datastore_id)
        if record is None:
            raise NotFoundError(f"datastore {datastore_id} not found")
        return self._settle_datastore(record)

    def _settle_datastore(self, record: DatastoreRecord) -> DatastoreRecord:
        if record.status == "CREATING":
            with self.lock:
                if record.settle(now()):
                    self.save_datastore(record)
        return record

    def all_datastores(self) -> list[DatastoreRecord]:
        return [self._settle_datastore(r) for r in list(self.datastores.values())]

    def active_datastore(self, datastore_id: str, what: str) -> DatastoreRecord:
        """The datastore, which must be ACTIVE (AWS: ConflictException while it is still CREATING)."""
        record = self.datastore(datastore_id)
        if record.status != "ACTIVE":
            raise ConflictError(
                f"{what}: datastore {datastore_id} is {record.status}; wait until GetDatastore answers "
                "datastoreStatus ACTIVE"
            )
        return record

    def save_datastore(self, record: DatastoreRecord) -> None:
        with self.lock:
            write_json_atomic(
                self._ds_dir(record.datastore_id) / "datastore.json", dataclasses.asdict(record)
            )

    def delete_datastore(self, datastore_id: str) -> DatastoreRecord:
        with self.lock:
            record = self.datastore(datastore_id)
            live = [
                i for i in self.image_sets[datastore_id].values() if self._settle(i).state != "DELETED"
            ]
            if live:
                raise ConflictError(
                    f"datastore {datastore_id} still holds {len(live)} image sets "
                    f"(e.g. {live[0].image_set_id}); delete them first"
                )
            running = [
                j for j in self.jobs[datastore_id].values() if j.status in ("SUBMITTED", "IN_PROGRESS")
            ]
            if running:
                raise ConflictError(f"datastore {datastore_id} has a running import job {running[0].job_id}")
            (self._ds_dir(datastore_id) / "datastore.json").unlink()
            shutil.rmtree(self._ds_dir(datastore_id), ignore_errors=True)
            for table in (self.datastores, self.image_sets, self.jobs, self.frames):
                table.pop(datastore_id, None)
            record.status = "DELETING"
            return record

    # ---- import jobs ---------------------------------------------------------------------------------
    def save_job(self, job: JobRecord) -> None:
        with self.lock:
            write_json_atomic(
                self._ds_dir(job.datastore_id) / "jobs" / f"{job.job_id}.json", dataclasses.asdict(job)
            )
            self.jobs[job.datastore_id][job.job_id] = job

    def job(self, datastore_id: str, job_id: str) -> JobRecord:
        self.datastore(datastore_id)
        job = self.jobs[datastore_id].get(job_id)
        if job is None:
            raise NotFoundError(f"import job {job_id} not found in datastore {datastore_id}")
        return job

    # ---- frames --------------------------------------------------------------------------------------
    def write_frame(self, datastore_id: str, frame_id: str, data: bytes, content_type: str) -> None:
        """Store one frame's bytes durably under its (new) image frame ID."""
        path = self._frame_path(datastore_id, frame_id, content_type)
        try:
            write_bytes_atomic(path, data)
        except OSError as exc:
            raise StorageError(
                f"cannot store image frame {frame_id} ({len(data)} bytes) of datastore {datastore_id}: {exc}"
            ) from exc
        self.frames[datastore_id][frame_id] = FrameLocation(path, content_type)

    def discard_frames(self, datastore_id: str, frame_ids: Iterable[str]) -> int:
        """Remove stored frames no image set names (those of a failed import); returns how many."""
        removed = 0
        with self.lock:
            referenced = self._referenced_frames(datastore_id)
            table = self.frames.get(datastore_id, {})
            for frame_id in frame_ids:
                location = table.get(frame_id)
                if location is None or frame_id in referenced:
                    continue
                location.path.unlink(missing_ok=True)
                del table[frame_id]
                removed += 1
        return removed

    def _referenced_frames(self, datastore_id: str) -> set[str]:
        """Frame IDs named by any version of any image set that is not deleted (or being deleted)."""
        referenced: set[str] = set()
        for record in self.image_sets.get(datastore_id, {}).values():
            self._settle(record)
            if record.state == "DELETED" or record.settle_state == "DELETED":  # deleted, or being deleted
                continue
            referenced.update(record.frame_ids)
            for version in record.versions[:-1]:
                try:
                    referenced.update(metadata.frame_ids(self.document(record, version.version_id)))
                except (OSError, ValueError):
                    logger.warning(
                        "image set %s version %s: metadata unreadable; its frames are kept",
                        record.image_set_id,
                        version.version_id,
                    )
                    return referenced | set(self.frames.get(datastore_id, {}))
        return referenced

    def collect_garbage(self) -> tuple[int, int]:
        """At start (the store is locked, no job runs): remove temporary files of interrupted writes and frame
        files no live image set names (a killed import's frames, frames of deleted image sets).
        Returns (frames removed, temporary files removed)."""
        temporary = 0
        for path in (self.root / "datastores").glob("**/.*.tmp"):
            path.unlink(missing_ok=True)
            temporary += 1
        frames = 0
        for datastore_id in list(self.frames):
            referenced = self._referenced_frames(datastore_id)
            table = self.frames[datastore_id]
            for frame_id in [f for f in table if f not in referenced]:
                table.pop(frame_id).path.unlink(missing_ok=True)
                frames += 1
        if frames or temporary:
            logger.info(
                "garbage collected %d unreferenced frame files and %d temporary files in %s",
                frames,
                temporary,
                self.root,
            )
        return frames, temporary

    def frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> FrameLocation:
        self.image_set(datastore_id, image_set_id)
        check_id(frame_id, "imageFrameId")
        if frame_id not in self._frame_sets.get((datastore_id, image_set_id), frozenset()):
            raise NotFoundError(
                f"image frame {frame_id} not found in image set {image_set_id} of datastore {datastore_id}"
            )
        return self.frames[datastore_id][frame_id]

    # ---- image sets ----------------------------------------------------------------------------------
    def _settle(self, record: ImageSetRecord) -> ImageSetRecord:
        """Finish the record's LOCKED transition once its time has come (lazily, on the next look)."""
        if record.settle_at is not None:
            with self.lock:
                if record.settle(now()):
                    self._save_image_set(record)
                    if record.state == "DELETED":
                        self._frame_sets.pop((record.datastore_id, record.image_set_id), None)
        return record

    def image_set(self, datastore_id: str, image_set_id: str) -> ImageSetRecord:
        self.datastore(datastore_id)
        check_id(image_set_id, "imageSetId")
        record = self.image_sets[datastore_id].get(image_set_id)
        if record is not None:
            self._settle(record)
        if record is None or record.state == "DELETED":
            raise NotFoundError(f"image set {image_set_id} not found in datastore {datastore_id}")
        return record

    def live_image_sets(self, datastore_id: str) -> list[ImageSetRecord]:
        self.datastore(datastore_id)
        return [
            r for r in self.image_sets[datastore_id].values() if self._settle(r).state != "DELETED"
        ]

    @staticmethod
    def check_unlocked(record: ImageSetRecord, what: str) -> None:
        """AWS rejects writes to a LOCKED image set (an update, copy or delete still in progress)."""
        if record.state == "LOCKED":
            raise ConflictError(
                f"{what}: image set {record.image_set_id} is LOCKED ({record.workflow_status}); wait until "
                "GetImageSet answers imageSetState ACTIVE, then retry"
            )

    def lock_image_set(self, record: ImageSetRecord, workflow: str, final_workflow: str,
                       final_state: str = "ACTIVE", version: bool = False) -> None:
        """Put the record into LOCKED/``workflow`` for the configured transition time."""
        with self.lock:
            record.lock(workflow, final_workflow, now() + self.transition_s, final_state, version)
            self._save_image_set(record)

    def touch(self, record: ImageSetRecord) -> None:
        """Record an access (lastAccessedAt, storage tier); persisted at most once a minute per image set."""
        ts = now()
        previous = record.last_accessed_at
        record.last_accessed_at = ts
        if previous is None or ts - previous > 60:
            self.save_image_set(record)

    def version(self, record: ImageSetRecord, version_id: str | None) -> VersionRecord:
        if version_id is None:
            return record.versions[-1]
        for version in record.versions:
            if str(version.version_id) == str(version_id):
                return version
        raise NotFoundError(f"version {version_id} of image set {record.image_set_id} not found")

    def metadata_blob(self, record: ImageSetRecord, version_id: int) -> bytes:
        return (
            self._is_dir(record.datastore_id, record.image_set_id) / f"v{version_id}.json.gz"
        ).read_bytes()

    def document(self, record: ImageSetRecord, version_id: int | None = None) -> dict[str, Any]:
        blob = self.metadata_blob(record, version_id or record.latest_version)
        return json.loads(gzip.decompress(blob))

    def check_latest(self, record: ImageSetRecord, latest_version_id: str, what: str) -> None:
        if str(latest_version_id) != str(record.latest_version):
            raise ConflictError(
                f"{what}: latest version of image set {record.image_set_id} is {record.latest_version}, "
                f"not {latest_version_id}; read it again and retry"
            )

    def commit_version(
        self,
        datastore_id: str,
        image_set_id: str | None,
        build: Callable[[str], dict[str, Any]],
        workflow_status: str,
        is_primary: bool | None = None,
        forced: bool | None = None,
    ) -> ImageSetRecord:
        """Write a new version (a new image set when ``image_set_id`` is None) whose document is
        ``build(image_set_id)``; frames it names must already be stored."""
        with self.lock:
            ts = now()
            if image_set_id is None:
                record = ImageSetRecord(
                    new_id(),
                    datastore_id,
                    ts,
                    ts,
                    "ACTIVE",
                    workflow_status,
                    bool(is_primary),
                    [],
                    {},
                    [],
                    [],
                    region=self.region,
                    account_id=self.account_id,
                )
            else:
                record = self.image_set(datastore_id, image_set_id)
            document = build(record.image_set_id)
            version_id = record.latest_version + 1 if record.versions else 1
            primary = record.is_primary if is_primary is None else is_primary
            version = VersionRecord(version_id, ts, ts, workflow_status, primary, forced=forced)
            folder = self._is_dir(datastore_id, record.image_set_id)
            try:
                write_bytes_atomic(folder / f"v{version_id}.json.gz", gzip_json(document))
            except OSError as exc:
                raise StorageError(
                    f"cannot store version {version_id} of image set {record.image_set_id}: {exc}"
                ) from exc
            record.versions.append(version)
            record.updated_at, record.workflow_status, record.is_primary = ts, workflow_status, primary
            record.frame_ids = metadata.frame_ids(document)
            record.sop_uids = [inst.sop_uid for inst in metadata.flatten_document(document)]
            record.dicom_tags = metadata.summary_tags(document)
            self._save_image_set(record)
            self.image_sets[datastore_id][record.image_set_id] = record
            self._frame_sets[(datastore_id, record.image_set_id)] = frozenset(record.frame_ids)
            return record

    def rollback_version(self, datastore_id: str, image_set_id: str, version_id: int) -> None:
        """Undo :meth:`commit_version` (an import whose job output could not be written): a new image set
        goes away, a new version of an existing one is dropped. Nothing happens if a later version exists."""
        with self.lock:
            record = self.image_sets.get(datastore_id, {}).get(image_set_id)
            if record is None or record.latest_version != version_id:
                return
            folder = self._is_dir(datastore_id, image_set_id)
            if len(record.versions) == 1:
                shutil.rmtree(folder, ignore_errors=True)
                del self.image_sets[datastore_id][image_set_id]
                self._frame_sets.pop((datastore_id, image_set_id), None)
                return
            record.versions.pop()
            document = self.document(record)
            previous = record.versions[-1]
            record.workflow_status, record.is_primary = previous.workflow_status, previous.is_primary
            record.frame_ids = metadata.frame_ids(document)
            record.sop_uids = [inst.sop_uid for inst in metadata.flatten_document(document)]
            record.dicom_tags = metadata.summary_tags(document)
            self._save_image_set(record)
            (folder / f"v{version_id}.json.gz").unlink(missing_ok=True)
            self._frame_sets[(datastore_id, image_set_id)] = frozenset(record.frame_ids)

    def _save_image_set(self, record: ImageSetRecord) -> None:
        path = self._is_dir(record.datastore_id, record.image_set_id) / "imageset.json"
        write_json_atomic(path, record.to_json())

    def save_image_set(self, record: ImageSetRecord) -> None:
        with self.lock:
            self._save_image_set(record)

    def delete_image_set(self, datastore_id: str, image_set_id: str) -> ImageSetRecord:
        with self.lock:
            record = self.image_set(datastore_id, image_set_id)
            self.check_unlocked(record, "DeleteImageSet")
            self.lock_image_set(record, "DELETING", "DELETED", final_state="DELETED")
            return record

    def all_resources(self) -> Iterable[DatastoreRecord | ImageSetRecord]:
        yield from self.datastores.values()
        for sets in self.image_sets.values():
            yield from (r for r in sets.values() if self._settle(r).state != "DELETED")

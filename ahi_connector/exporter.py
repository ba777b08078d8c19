"""``ImageSetExporter``: the pythonic API over metadata, frame fetching, DICOMize and volumes.

One exporter owns one persistent frame worker pool and decoder registry; create it once and reuse it (it is
thread-safe), then :meth:`close` it (or use it as a context manager) to stop its workers and decoder
processes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import botocore.exceptions as bce
import numpy as np
from pydicom.dataset import FileDataset

from .client import make_ahi_client
from .decoders import Codec, DecoderRegistry
from .dicomize import make_dataset, set_pixel_data
from .errors import (
    AHIConfigError,
    AHICredentialsError,
    AHIRequestError,
    ImageSetNotFoundError,
    MetadataError,
    SeriesNotFoundError,
)
from .fetch import THROTTLING_CODES, FrameFetcher, FrameTask, JobStats, RetryPolicy
from .metadata import ImageSetMetadata, parse_metadata_blob
from .transport import DEFAULT_FRAME_READ_TIMEOUT_S
from .volume import Volume, allocate, plan_series

log = logging.getLogger(__name__)
Progress = Callable[[int], None]


def _client_error(exc: Exception, what: str) -> Exception:
    if isinstance(exc, bce.NoCredentialsError):
        return AHICredentialsError(
            f"{what}: no AWS credentials found; configure the default chain or pass a client"
        )
    if not isinstance(exc, bce.ClientError):
        return AHIRequestError(f"{what}: {type(exc).__name__}: {exc}")
    resp = exc.response or {}
    status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode") or 502)
    code = str(resp.get("Error", {}).get("Code", ""))
    if status == 404 or code == "ResourceNotFoundException":
        return ImageSetNotFoundError(f"{what}: not found ({code}): {exc}", error_code=code)
    if status == 403 or code in (
        "AccessDeniedException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
    ):
        return AHICredentialsError(f"{what}: access denied ({code}): {exc}")
    return AHIRequestError(
        f"{what}: {code or status}: {exc}", http_status=status if status >= 400 else 502, error_code=code
    )


class ImageSetExporter:
    """Export AHI image sets as pydicom Datasets or as a :class:`Volume`.

    :param client: a botocore ``medical-imaging`` client (see :func:`make_ahi_client`); built from the default
        chain (and ``endpoint_url`` / ``region_name``) when omitted.
    :param decoder: HTJ2K/J2K backend preference: ``auto``, ``openjph``, ``openjpeg`` or ``jpeg2k``.
    :param max_workers: frame worker threads (each holds at most one request and one decode).
    :param deadline_s: default overall deadline of one export call.
    :param transport: GetImageFrame transport: ``auto`` (the lean urllib3 + SigV4 transport when the client
        allows it, else botocore), ``lean`` or ``botocore`` (see :mod:`ahi_connector.transport`).
    :param max_tps: ceiling on GetImageFrame requests per second (AHI's default quota: 1000); None: no
        ceiling. Throttling answers also halve the concurrency (AIMD, see :mod:`ahi_connector.fetch`).
    :param frame_read_timeout_s: how long one frame attempt waits for data (lean transport).

    Time budget of a frame that never answers, with the defaults: each attempt waits 10 s for data, a frame
    gets at most 30 s over all its attempts (``RetryPolicy.frame_budget_s``), so one hung frame fails the
    export with FrameFetchError naming it after about 30 s; a frame that stalls once and then answers costs
    one 10 s attempt and succeeds. The export as a whole is bounded by ``deadline_s``.
    """

    def __init__(
        self,
        client: Any = None,
        decoder: str = "auto",
        max_workers: int = 16,
        deadline_s: float = 600.0,
        *,
        retry: RetryPolicy | None = None,
        metadata_cache_size: int = 16,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        transport: str = "auto",
        max_tps: float | None = 1000.0,
        frame_read_timeout_s: float = DEFAULT_FRAME_READ_TIMEOUT_S,
    ) -> None:
        if deadline_s <= 0:
            raise AHIConfigError(f"deadline_s must be > 0, got {deadline_s}")
        try:
            self.decoders = DecoderRegistry(decoder)
        except ValueError as exc:
            raise AHIConfigError(str(exc)) from exc
        self.client = client or make_ahi_client(
            endpoint_url, region_name, max_pool_connections=max(64, max_workers)
        )
        self.deadline_s = deadline_s
        try:
            self.fetcher = FrameFetcher(
                self.client,
                self.decoders,
                max_workers=max_workers,
                retry=retry,
                transport=transport,
                max_tps=max_tps,
                frame_read_timeout_s=frame_read_timeout_s,
            )
        except ValueError as exc:
            raise AHIConfigError(str(exc)) from exc
        self._cache: OrderedDict[tuple[str, str, str | None], ImageSetMetadata] = OrderedDict()
        self._cache_size = metadata_cache_size
        self._cache_lock = threading.Lock()
        self.last_stats: JobStats | None = None
        self._throttled = 0
        self._throttle_lock = threading.Lock()
        # Every attempt of every call, botocore's own retries included, passes this event (a botocore client;
        # a DicomWebSource has no botocore events: its DICOMweb client retries on its own).
        events = getattr(getattr(self.client, "meta", None), "events", None)
        if events is not None:
            events.register("needs-retry.medical-imaging", self._count_throttle)

    @property
    def throttled_calls(self) -> int:
        """How many AHI API responses to this exporter were throttling (HTTP 429 or a throttling error code),
        botocore's retried attempts included; for metrics, read it before and after a job.

        Calls made through botocore are counted on the client's ``needs-retry`` event; frames fetched by the
        lean transport bypass botocore, so their throttled answers are counted by the fetcher's rate limiter.
        """
        lean = getattr(self.fetcher.transport, "name", "botocore") != "botocore"
        return self._throttled + (self.fetcher.limiter.throttled if lean else 0)

    def _count_throttle(self, response: Any = None, **_: Any) -> None:
        if not response or not isinstance(response, tuple) or len(response) != 2:
            return  # a connection error (no response) is not a throttle
        http, parsed = response
        code = (parsed or {}).get("Error", {}).get("Code") if isinstance(parsed, dict) else None
        if getattr(http, "status_code", None) == 429 or code in THROTTLING_CODES:
            with self._throttle_lock:
                self._throttled += 1

    # -- lifecycle -------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the frame workers and decoder processes (the exporter restarts them lazily if used again)."""
        self.fetcher.close()
        self.fetcher.transport.close()
        self.decoders.close()

    def __enter__(self) -> ImageSetExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata and search ---------------------------------------------------------------------------------
    def current_version(self, datastore_id: str, image_set_id: str) -> str | None:
        """The image set's current versionId (GetImageSet); None when the caller may not call GetImageSet."""
        try:
            resp = self.client.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id)
        except (bce.ClientError, bce.BotoCoreError) as exc:  # also connection errors, no credentials
            err = _client_error(exc, f"GetImageSet for image set {image_set_id} (datastore {datastore_id})")
            if isinstance(err, AHICredentialsError) and isinstance(exc, bce.ClientError):
                log.debug("%s; metadata is read unversioned and cached under version None", err)
                return None
            raise err from exc
        version = resp.get("versionId")
        return str(version) if version is not None else None

    def get_metadata(
        self, datastore_id: str, image_set_id: str, version_id: str | None = None
    ) -> ImageSetMetadata:
        """Parsed metadata, cached per (datastore, image set, version); the current version is looked up
        first."""
        version = version_id or self.current_version(datastore_id, image_set_id)
        key = (datastore_id, image_set_id, version)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        kwargs = {"datastoreId": datastore_id, "imageSetId": image_set_id}
        if version:
            kwargs["versionId"] = version
        what = (
            f"GetImageSetMetadata for image set {image_set_id} version {version} (datastore {datastore_id})"
        )
        try:
            resp = self.client.get_image_set_metadata(**kwargs)
            body = resp["imageSetMetadataBlob"]
            try:
                blob = body.read()
            finally:
                body.close()
        except (bce.ClientError, bce.BotoCoreError) as exc:  # also connection errors, no credentials
            raise _client_error(exc, what) from exc
        doc = parse_metadata_blob(blob, datastore_id, image_set_id)
        meta = ImageSetMetadata.from_json(doc, datastore_id, image_set_id, version)
        with self._cache_lock:
            self._cache[key] = meta
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return meta

    def series_uids(self, datastore_id: str, image_set_id: str) -> list[str]:
        return self.get_metadata(datastore_id, image_set_id).series_uids()

    def iter_image_sets(
        self, datastore_id: str, search_criteria: dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every SearchImageSets summary (all pages)."""
        paginator = self.client.get_paginator("search_image_sets")
        kwargs: dict[str, Any] = {"datastoreId": datastore_id}
        if search_criteria:
            kwargs["searchCriteria"] = search_criteria
        try:
            for page in paginator.paginate(**kwargs):
                yield from page.get("imageSetsMetadataSummaries", [])
        except (bce.ClientError, bce.BotoCoreError) as exc:  # also connection errors, no credentials
            raise _client_error(exc, f"SearchImageSets in datastore {datastore_id}") from exc

    def search_image_sets(
        self, datastore_id: str, search_criteria: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return list(self.iter_image_sets(datastore_id, search_criteria))

    def find_image_sets_for_study(self, datastore_id: str, study_uid: str) -> list[str]:
        """Image set IDs holding ``study_uid`` (all pages, in the order returned)."""
        criteria = {"filters": [{"values": [{"DICOMStudyInstanceUID": study_uid}], "operator": "EQUAL"}]}
        ids = []
        for summary in self.iter_image_sets(datastore_id, criteria):
            if summary["imageSetId"] not in ids:
                ids.append(summary["imageSetId"])
        return ids

    # -- pixels ----------------------------------------------------------------------------------------------
    def _run(self, tasks: Iterable[FrameTask], deadline_s: float | None) -> None:
        t0 = time.perf_counter()
        self.last_stats = self.fetcher.run(tasks, deadline_s or self.deadline_s)
        log.debug(
            "fetched %d frames in %.3f s over %s (%d retries; %s)",
            self.last_stats.frames,
            time.perf_counter() - t0,
            self.last_stats.transport,
            self.last_stats.retries,
            self.last_stats.backends,
        )

    def to_datasets(
        self,
        datastore_id: str,
        image_set_id: str,
        series_uid: str | None = None,
        *,
        deadline_s: float | None = None,
        progress: Progress | None = None,
    ) -> list[FileDataset]:
        """One Dataset per instance (all series, or ``series_uid``), sorted by series then Instance Number."""
        meta = self.get_metadata(datastore_id, image_set_id)
        meta.get_series(series_uid)  # unknown series: fail before any work
        out: list[tuple[FileDataset, np.ndarray | None, dict[str, Codec]]] = []

        def tasks() -> Iterator[FrameTask]:
            # Built lazily: the fetcher pulls tasks as slots free up, so DICOMizing overlaps with fetching.
            for inst in meta.iter_instances(series_uid):
                ds = make_dataset(meta, inst)
                if not inst.frames:
                    out.append((ds, None, {}))
                    continue
                spec = inst.frame_spec()
                pixels = np.empty((len(inst.frames), *spec.shape), dtype=spec.dtype)
                seen: dict[str, Codec] = {}
                out.append((ds, pixels, seen))

                def sink(
                    task: FrameTask,
                    frame: np.ndarray,
                    codec: Codec,
                    _px: np.ndarray = pixels,
                    _seen: dict[str, Codec] = seen,
                ) -> None:
                    _px[task.ref.frame_index] = frame
                    _seen["codec"] = codec
                    if progress:
                        progress(1)

                for frame in inst.frames:
                    yield FrameTask(
                        meta.frame_ref(inst, frame), spec, frame.checksum, inst.stored_transfer_syntax, sink
                    )

        self._run(tasks(), deadline_s)
        datasets = []
        for ds, pixels, seen in out:
            if pixels is not None:
                multi = pixels.shape[0] > 1 or "NumberOfFrames" in ds
                set_pixel_data(ds, pixels if multi else pixels[0], seen.get("codec"))
            datasets.append(ds)
        return datasets

    def frames_array(
        self,
        datastore_id: str,
        image_set_id: str,
        sop_instance_uids: Sequence[str],
        *,
        deadline_s: float | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """The stored pixel values of the given single-frame instances, in the order given, decoded straight
        into one preallocated ``(len(uids), rows, columns[, samples])`` array of the stored type (no datasets,
        no rescale, no geometry checks: for a caller that sorted the slices itself, e.g. the MONAI Deploy
        volume operator). Only these instances' frames are fetched.

        Raises SeriesNotFoundError for a UID the image set does not hold, MetadataError for a multi-frame
        instance or a frame size that differs from the first instance's.
        """
        meta = self.get_metadata(datastore_id, image_set_id)
        by_uid = {inst.sop_instance_uid: inst for inst in meta.iter_instances()}
        where = f"image set {image_set_id} (datastore {datastore_id})"
        missing = [uid for uid in sop_instance_uids if uid not in by_uid]
        if missing:
            raise SeriesNotFoundError(f"{where} holds no instance {missing[0]} ({len(missing)} missing)")
        instances = [by_uid[uid] for uid in sop_instance_uids]
        if not instances:
            raise AHIConfigError(f"frames_array of {where}: no instances given")
        first = instances[0].frame_spec()
        for inst in instances:
            if len(inst.frames) != 1:
                raise MetadataError(
                    f"instance {inst.sop_instance_uid} of {where} has {len(inst.frames)} frames; "
                    "frames_array takes single-frame instances (use to_volume for multi-frame series)"
                )
        array = np.empty((len(instances), *first.shape), dtype=first.dtype)

        def sink(task: FrameTask, frame: np.ndarray, codec: Codec) -> None:
            array[slot[task.ref.sop_instance_uid]] = frame
            if progress:
                progress(1)

        slot = {inst.sop_instance_uid: k for k, inst in enumerate(instances)}
        tasks = []
        for inst in instances:
            spec = inst.frame_spec()
            if spec.shape != first.shape:
                raise MetadataError(
                    f"instance {inst.sop_instance_uid} of {where} has frames of shape {spec.shape}, the "
                    f"first instance {instances[0].sop_instance_uid} {first.shape}: they do not stack"
                )
            frame = inst.frames[0]
            tasks.append(
                FrameTask(
                    meta.frame_ref(inst, frame), spec, frame.checksum, inst.stored_transfer_syntax, sink
                )
            )
        self._run(tasks, deadline_s)
        return array

    def to_volume(
        self,
        datastore_id: str,
        image_set_id: str,
        series_uid: str | None = None,
        *,
        rescale: bool = True,
        deadline_s: float | None = None,
        progress: Progress | None = None,
    ) -> Volume:
        """One series as a DHW :class:`Volume` (see ``ahi_connector.volume``); frames decode straight into
        place.

        ``series_uid`` may be omitted only when the image set holds exactly one series.
        """
        meta = self.get_metadata(datastore_id, image_set_id)
        if series_uid is None:
            uids = meta.series_uids()
            if len(uids) != 1:
                raise AHIConfigError(
                    f"image set {image_set_id} (datastore {datastore_id}) holds {len(uids)} series {uids}; "
                    "pass series_uid"
                )
            series_uid = uids[0]
        series = meta.get_series(series_uid)[0]
        plan = plan_series(meta, series)
        array = allocate(plan, rescale)
        convert = array.dtype == np.float32 and plan.spec.dtype != np.float32
        slot = {f.id: k for k, f in enumerate(plan.frames)}

        def sink(task: FrameTask, frame: np.ndarray, codec: Codec) -> None:
            k = slot[task.ref.frame_id]
            if convert and plan.slopes[k] == 1.0:  # one pass: stored + intercept
                np.add(
                    frame, np.float32(plan.intercepts[k]), out=array[k], dtype=np.float32, casting="unsafe"
                )
            elif convert:
                np.multiply(
                    frame, np.float32(plan.slopes[k]), out=array[k], dtype=np.float32, casting="unsafe"
                )
                if plan.intercepts[k]:
                    array[k] += np.float32(plan.intercepts[k])
            else:
                array[k] = frame
            if progress:
                progress(1)

        tasks = [
            FrameTask(
                meta.frame_ref(inst, frame), plan.spec, frame.checksum, inst.stored_transfer_syntax, sink
            )
            for inst, frame in zip(plan.instances, plan.frames, strict=True)
        ]
        self._run(tasks, deadline_s)
        return Volume(
            array=array,
            geometry=plan.geometry,
            datastore_id=datastore_id,
            image_set_id=image_set_id,
            series_uid=series_uid,
            study_uid=meta.study_instance_uid,
            modality=series.modality,
            sop_instance_uids=tuple(i.sop_instance_uid for i in plan.instances),
            frame_ids=tuple(f.id for f in plan.frames),
            rescaled=convert,
            rescale_slope=plan.slopes,
            rescale_intercept=plan.intercepts,
        )

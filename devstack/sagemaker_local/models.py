"""What the SageMaker platform does for a multi-model endpoint, done locally.

:class:`ModelSource` fetches ``<ModelDataUrl>/<TargetModel>`` (a local folder or ``s3://``) and extracts it
into the models directory (``<models dir>/<hash>/model``, like ``/opt/ml/models/<hash>/model``);
:class:`ContainerClient` speaks the container's MME HTTP API; :class:`ModelManager` loads each target once
(``POST /models``), keeps an LRU of loaded models, evicts on 507 and reloads a model the container no longer
has.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import logging
import shutil
import socket
import tarfile
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import psutil

from ahi_connector.s3uri import S3Uri, S3UriError
from app.untrusted import brief
from devstack.sagemaker_local.errors import (
    RuntimeApiError,
    bad_gateway,
    model_error,
    service_unavailable,
    validation_error,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _receive_buffer_bytes() -> int:
    """The largest socket receive buffer this host allows an unprivileged process (net.core.rmem_max)."""
    try:
        return max(1 << 20, int(Path("/proc/sys/net/core/rmem_max").read_text().strip()))
    except (OSError, ValueError):
        return 4 << 20


class _BigWindowConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket receive buffer is as large as the host allows.

    multi-model-server closes the connection after every error response with ``SO_LINGER 0``: what the
    client has not received by then is discarded with a reset. A large receive window lets the whole response
    (the container keeps error bodies under 1 MiB) reach this side before that close."""

    def connect(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _receive_buffer_bytes())
            sock.settimeout(self.timeout)
            sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock


class ContainerClient:
    """HTTP client for a container started by ``container/serve`` (MMS): one connection per request, the
    whole response body read whatever its size and status."""

    def __init__(self, base_url: str, timeout_s: float = 900.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        split = urllib.parse.urlsplit(self.base_url)
        self._host = split.hostname or "127.0.0.1"
        self._port = split.port or 80
        self._prefix = split.path.rstrip("/")

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> HttpReply:
        """One HTTP call to the container, its whole body read; TimeoutError past ``timeout_s``."""
        conn = _BigWindowConnection(self._host, self._port, timeout=timeout_s or self.timeout_s)
        try:
            try:
                conn.request(method, self._prefix + path, body=body, headers=dict(headers or {}))
                resp = conn.getresponse()
            except TimeoutError:
                raise
            except (OSError, http.client.HTTPException) as exc:
                raise service_unavailable(f"container at {self.base_url} is not reachable: {exc}") from exc
            try:
                data = resp.read()
            except TimeoutError:
                raise
            except (OSError, http.client.HTTPException) as exc:
                length = resp.getheader("Content-Length") or "unknown"
                logger.error(
                    "%s %s: the container answered %d but the connection broke while its %s-byte body was "
                    "read: %s",
                    method,
                    path,
                    resp.status,
                    length,
                    exc,
                )
                raise bad_gateway(
                    f"the container answered {resp.status} but its {length}-byte response was cut off "
                    f"({type(exc).__name__}); see the container's log"
                ) from exc
            return HttpReply(resp.status, data, dict(resp.getheaders()))
        finally:
            conn.close()

    def ping(self) -> bool:
        try:
            return self.request("GET", "/ping").status == 200
        except RuntimeApiError:
            return False

    def load(self, name: str, model_dir: Path) -> HttpReply:
        body = json.dumps({"model_name": name, "url": str(model_dir)}).encode()
        return self.request("POST", "/models", body, {"Content-Type": "application/json"})

    def unload(self, name: str) -> HttpReply:
        return self.request("DELETE", f"/models/{name}")

    def unload_until_gone(self, name: str, timeout_s: float = 10.0) -> bool:
        """DELETE ``name`` until ``GET /models/<name>`` answers 404 (True), or ``timeout_s`` passes (False).

        MMS 1.1.11 answers a refused load (507) before it has settled its registry: a DELETE sent at once may
        find nothing (404) and the model then appears, registered without workers, so a retried load would be
        answered 409 "already registered" and never get a worker.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self.unload(name)
            if self.request("GET", f"/models/{name}").status == 404:
                return True
            if time.monotonic() > deadline:
                logger.warning("model %s still registered %.0f s after DELETE", name, timeout_s)
                return False
            time.sleep(0.2)

    def invoke(
        self, name: str, body: bytes, headers: Mapping[str, str], timeout_s: float | None = None
    ) -> HttpReply:
        return self.request("POST", f"/models/{name}/invoke", body, headers, timeout_s)

    def invocations(
        self, body: bytes, headers: Mapping[str, str], timeout_s: float | None = None
    ) -> HttpReply:
        return self.request("POST", "/invocations", body, headers, timeout_s)


def model_key(target_model: str) -> str:
    """The name a target model gets in the container (SageMaker also uses a hash of the target)."""
    return hashlib.sha256(target_model.encode()).hexdigest()[:32]


def check_target_model(target: str) -> str:
    """The canonical form of a TargetModel (``./model.tar.gz`` and ``a//b`` name ``model.tar.gz`` and
    ``a/b``), so one archive is loaded once whatever spelling a caller uses; names that could escape the
    model source (absolute, ``..``, backslashes, empty, over 1024 characters) are refused."""
    path = PurePosixPath(target or "")
    canonical = path.as_posix()
    if (
        not target
        or target.startswith("/")
        or ".." in path.parts
        or "\\" in target
        or len(target) > 1024
        or canonical in ("", ".")
    ):
        raise validation_error(f"TargetModel {brief(target)} must be a relative path such as 'model.tar.gz'")
    return canonical


class ModelSource:
    """Where model archives live: a local folder or an S3 prefix (the endpoint's ModelDataUrl)."""

    def __init__(self, location: str, s3_factory: Callable[[], Any] | None = None) -> None:
        self.location = location
        self._s3_factory = s3_factory
        self._s3 = None
        self.s3_prefix: S3Uri | None = None
        if location.startswith("s3://"):
            try:
                self.s3_prefix = S3Uri.parse(location, "--model-data-url")
            except S3UriError as exc:
                raise ValueError(str(exc)) from exc

    def _local_file(self, target: str) -> Path:
        """The archive in the local model folder; links that lead out of it are refused."""
        root = Path(self.location).resolve()
        src = Path(self.location) / target
        if not src.is_file():
            raise validation_error(
                f"Failed to download model data (TargetModel {brief(target)}): no file {target} in "
                f"{self.location}; put the archive there"
            )
        resolved = src.resolve()
        if not resolved.is_relative_to(root):
            raise validation_error(
                f"Failed to download model data (TargetModel {brief(target)}): it is a symbolic link out of "
                f"the model source {self.location}; copy the archive into the folder instead"
            )
        if resolved.stat().st_nlink > 1:
            raise validation_error(
                f"Failed to download model data (TargetModel {brief(target)}): it is a hard link "
                f"({resolved.stat().st_nlink} names) and may be shared with a file out of the model source "
                f"{self.location}; copy the archive into the folder instead"
            )
        return resolved

    def fetch(self, target: str, dest: Path) -> Path:
        """Copy the archive ``target`` to ``dest``; ValidationError (400) when it does not exist."""
        target = check_target_model(target)
        if self.s3_prefix is None:
            src = self._local_file(target)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        loc = self.s3_prefix.child(target)
        if self._s3 is None:
            if self._s3_factory is None:
                raise RuntimeError("no S3 client for an s3:// model source")
            self._s3 = self._s3_factory()
        s3: Any = self._s3
        try:
            s3.download_file(loc.bucket, loc.key, str(dest))
        except Exception as exc:  # botocore ClientError (404/403) and transfer errors
            raise validation_error(
                f"Failed to download model data (bucket: {loc.bucket}, key: {loc.key}): {exc}. Ensure "
                "that there is "
                "an object at the URL."
            ) from exc
        return dest


#: Disk space left free under the models directory after an extraction.
DISK_RESERVE_BYTES = 256 * 1024 * 1024


def extraction_limit(dest: Path, max_model_bytes: int | None = None) -> tuple[int, str]:
    """(bytes an archive may unpack to, why): free disk under ``dest`` less a reserve, the memory available
    to load it, and the configured maximum, whichever is smallest."""
    existing = dest
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    disk = shutil.disk_usage(existing).free - DISK_RESERVE_BYTES
    memory = psutil.virtual_memory().available
    limits = [
        (disk, f"free disk under {existing} less {DISK_RESERVE_BYTES >> 20} MiB"),
        (memory, "available memory"),
    ]
    if max_model_bytes is not None:
        limits.append((max_model_bytes, "--max-model-size-mb"))
    return min(limits)


def extract_archive(archive: Path, dest: Path, max_model_bytes: int | None = None) -> Path:
    """Extract ``model.tar.gz`` into ``dest`` (tarfile's ``data`` filter: no absolute paths, no links out of
    ``dest``). The sizes in the tar headers are added up first: an archive that would unpack to more than
    :func:`extraction_limit` is refused before anything is written. ``dest`` is removed on any failure."""
    if dest.exists():
        shutil.rmtree(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            total = sum(m.size for m in members if m.isfile())
            limit, why = extraction_limit(dest, max_model_bytes)
            if total > limit:
                raise validation_error(
                    f"model archive {archive.name} ({archive.stat().st_size} bytes) unpacks to {total} "
                    f"bytes, more than this host can take: {max(limit, 0)} bytes ({why}); use a smaller "
                    "model or a larger instance"
                )
            dest.mkdir(parents=True)
            tar.extractall(dest, members=members, filter="data")
    except RuntimeApiError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise validation_error(f"model archive {archive.name} is not a readable tar.gz: {exc}") from exc
    return dest


#: A folder whose container load failed is removed this long after the failure: multi-model-server keeps
#: restarting the workers of a failed model for a while (even after unregistering it), and they must still
#: find its files to report the real reason instead of "No such file or directory".
FAILED_LOAD_CLEANUP_S = 120.0


class _LoadRejected(Exception):
    """The container refused the load (the archive itself was fine): its folder is removed later."""


class ModelManager:
    """Load each TargetModel into the container once; LRU eviction on 507; thread-safe."""

    def __init__(
        self,
        container: ContainerClient,
        source: ModelSource,
        models_dir: Path,
        max_loaded: int = 8,
        max_model_bytes: int | None = None,
        failed_load_cleanup_s: float = FAILED_LOAD_CLEANUP_S,
    ):
        self.max_model_bytes = max_model_bytes
        self.failed_load_cleanup_s = failed_load_cleanup_s
        self.container = container
        self.source = source
        self.models_dir = Path(models_dir)
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, str] = OrderedDict()  # target -> container model name (LRU order)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.load_seconds: dict[str, float] = {}

    def _lock(self, target: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(target, threading.Lock())

    def loaded(self) -> list[str]:
        with self._guard:
            return list(self._loaded)

    def forget(self, target: str) -> None:
        target = check_target_model(target)
        with self._guard:
            self._loaded.pop(target, None)

    def ensure_loaded(self, target: str) -> str:
        """Container model name for ``target`` (canonical spelling), loading it first if needed."""
        target = check_target_model(target)
        with self._guard:
            if target in self._loaded:
                self._loaded.move_to_end(target)
                return self._loaded[target]
        with self._lock(target):
            with self._guard:
                if target in self._loaded:
                    return self._loaded[target]
            name = self._load(target)
            with self._guard:
                self._loaded[target] = name
            return name

    def _load(self, target: str) -> str:
        name = model_key(target)
        started = time.perf_counter()
        if self.container.request("GET", f"/models/{name}").status == 200:
            # Loaded before this gateway (re)started: its workers run in root / "model"; extracting the
            # archive again would delete that directory under them (new workers then die on os.getcwd()).
            logger.info("model %s (%s) was already loaded in the container", target, name)
            return name
        root = self.models_dir / name
        try:
            self._fetch_and_load(target, name, root)
        except RuntimeApiError as exc:
            # Nothing of a failed load stays: not the fetched archive, not its extraction, not the folder (a
            # load the container refused goes after FAILED_LOAD_CLEANUP_S, see there).
            if isinstance(exc.__cause__, _LoadRejected):
                self._remove_later(target, root)
            else:
                shutil.rmtree(root, ignore_errors=True)
            raise
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        self.load_seconds[target] = time.perf_counter() - started
        logger.info("loaded model %s as %s in %.2f s", target, name, self.load_seconds[target])
        self._trim()
        return name

    def _fetch_and_load(self, target: str, name: str, root: Path) -> None:
        archive = self.source.fetch(target, root / "archive" / PurePosixPath(target).name)
        model_dir = extract_archive(archive, root / "model", self.max_model_bytes)
        shutil.rmtree(archive.parent)
        reply = self.container.load(name, model_dir)
        if reply.status == 507:
            # MMS 1.1.11 leaves a model registered (without workers) after a 507: drop it, evict, retry once.
            self.container.unload_until_gone(name)
            self._evict_lru(exclude=target)
            reply = self.container.load(name, model_dir)
        if reply.status == 409:
            logger.info("model %s (%s) was already loaded in the container", target, name)
        elif reply.status != 200:
            self.container.unload(name)  # MMS may keep a failed model registered; its folder goes later
            raise model_error(reply.status, f"failed to load model {target!r}: {reply.text()}") from (
                _LoadRejected(name)
            )

    def _remove_later(self, target: str, root: Path) -> None:
        def remove() -> None:
            with self._lock(target):  # unless the target was loaded again meanwhile
                if target not in self.loaded():
                    shutil.rmtree(root, ignore_errors=True)
                    logger.info("removed %s of the failed load of %s", root, target)

        timer = threading.Timer(self.failed_load_cleanup_s, remove)
        timer.daemon = True
        timer.start()

    def _evict_lru(self, exclude: str) -> None:
        with self._guard:
            victims = [t for t in self._loaded if t != exclude]
        if not victims:
            return
        victim = victims[0]
        logger.info("container out of memory: unloading least recently used model %s", victim)
        self.unload(victim)

    def _trim(self) -> None:
        while len(self.loaded()) >= self.max_loaded:
            self.unload(self.loaded()[0])

    def unload(self, target: str) -> None:
        with self._guard:
            name = self._loaded.pop(target, None)
        if name is not None:
            reply = self.container.unload(name)
            if reply.status not in (200, 404):
                logger.warning("unloading %s (%s) answered %d: %s", target, name, reply.status, reply.text())
            shutil.rmtree(self.models_dir / name, ignore_errors=True)

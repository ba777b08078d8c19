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
import json
import logging
import shutil
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from container.payload import PayloadError, S3Location
from devstack.sagemaker_local.errors import (
    RuntimeApiError,
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


class ContainerClient:
    """HTTP client for a container started by ``container/serve`` (MMS)."""

    def __init__(self, base_url: str, timeout_s: float = 900.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> HttpReply:
        req = urllib.request.Request(
            f"{self.base_url}{path}", data=body, method=method, headers=dict(headers or {})
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return HttpReply(resp.status, resp.read(), dict(resp.headers.items()))
        except urllib.error.HTTPError as exc:
            return HttpReply(exc.code, exc.read(), dict(exc.headers.items()))
        except (urllib.error.URLError, OSError) as exc:
            raise service_unavailable(f"container at {self.base_url} is not reachable: {exc}") from exc

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

    def invoke(self, name: str, body: bytes, headers: Mapping[str, str]) -> HttpReply:
        return self.request("POST", f"/models/{name}/invoke", body, headers)

    def invocations(self, body: bytes, headers: Mapping[str, str]) -> HttpReply:
        return self.request("POST", "/invocations", body, headers)


def model_key(target_model: str) -> str:
    """The name a target model gets in the container (SageMaker also uses a hash of the target)."""
    return hashlib.sha256(target_model.encode()).hexdigest()[:32]


def check_target_model(target: str) -> str:
    """Reject target names that could escape the model source (absolute, ``..``, empty)."""
    path = PurePosixPath(target)
    if not target or target.startswith("/") or ".." in path.parts or "\\" in target or len(target) > 1024:
        raise validation_error(f"TargetModel {target!r} must be a relative path such as 'model.tar.gz'")
    return target


class ModelSource:
    """Where model archives live: a local folder or an S3 prefix (the endpoint's ModelDataUrl)."""

    def __init__(self, location: str, s3_factory: Callable[[], Any] | None = None) -> None:
        self.location = location
        self._s3_factory = s3_factory
        self._s3 = None
        self.s3_prefix: S3Location | None = None
        if location.startswith("s3://"):
            try:
                self.s3_prefix = S3Location.parse(location, "--model-data-url")
            except PayloadError as exc:
                raise ValueError(str(exc)) from exc

    def fetch(self, target: str, dest: Path) -> Path:
        """Copy the archive ``target`` to ``dest``; ValidationError (400) when it does not exist."""
        check_target_model(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.s3_prefix is None:
            src = Path(self.location) / target
            if not src.is_file():
                raise validation_error(
                    f"Failed to download model data (TargetModel {target!r}): no file {src}; put the "
                    "archive in "
                    f"{self.location}"
                )
            shutil.copyfile(src, dest)
            return dest
        loc = self.s3_prefix.child(target)
        if self._s3 is None:
            if self._s3_factory is None:
                raise RuntimeError("no S3 client for an s3:// model source")
            self._s3 = self._s3_factory()
        try:
            self._s3.download_file(loc.bucket, loc.key, str(dest))
        except Exception as exc:  # botocore ClientError (404/403) and transfer errors
            raise validation_error(
                f"Failed to download model data (bucket: {loc.bucket}, key: {loc.key}): {exc}. Ensure "
                "that there is "
                "an object at the URL."
            ) from exc
        return dest


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract ``model.tar.gz`` into ``dest`` (tarfile's ``data`` filter: no absolute paths or escapes)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise validation_error(f"model archive {archive.name} is not a readable tar.gz: {exc}") from exc
    return dest


class ModelManager:
    """Load each TargetModel into the container once; LRU eviction on 507; thread-safe."""

    def __init__(
        self, container: ContainerClient, source: ModelSource, models_dir: Path, max_loaded: int = 8
    ):
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
        with self._guard:
            self._loaded.pop(target, None)

    def ensure_loaded(self, target: str) -> str:
        """Container model name for ``target``, loading it first if needed."""
        check_target_model(target)
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
        archive = self.source.fetch(target, root / "archive" / PurePosixPath(target).name)
        model_dir = extract_archive(archive, root / "model")
        archive.unlink()
        reply = self.container.load(name, model_dir)
        if reply.status == 507:
            # MMS 1.1.11 leaves a model registered (without workers) after a 507: drop it, evict, retry once.
            self.container.unload(name)
            self._evict_lru(exclude=target)
            reply = self.container.load(name, model_dir)
        if reply.status == 409:
            logger.info("model %s (%s) was already loaded in the container", target, name)
        elif reply.status != 200:
            if reply.status == 507:
                self.container.unload(name)
            raise model_error(reply.status, f"failed to load model {target!r}: {reply.text()}")
        self.load_seconds[target] = time.perf_counter() - started
        logger.info("loaded model %s as %s in %.2f s", target, name, self.load_seconds[target])
        self._trim()
        return name

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

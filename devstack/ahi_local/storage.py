"""Atomic, durable file writes and reads for the local store."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    write_bytes_atomic(path, json.dumps(value, separators=(",", ":")).encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def gzip_json(value: Any) -> bytes:
    """Gzip-compressed compact JSON (what GetImageSetMetadata returns)."""
    return gzip.compress(json.dumps(value, separators=(",", ":")).encode(), compresslevel=6, mtime=0)

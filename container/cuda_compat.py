"""CUDA forward compatibility: use the image's ``cuda-compat`` driver libraries when the host driver is older.

The image is built on the CUDA 13 runtime (to match holoscan-cu13 and the cu130 torch build). A SageMaker GPU
host whose driver predates CUDA 13 can still run it on data-center GPUs through NVIDIA's forward-compatibility
package (``/usr/local/cuda/compat``), which must then come first on ``LD_LIBRARY_PATH``; on a host with a new
enough driver it must not (the host's own driver wins). This is the check SageMaker's documentation asks
containers to make at start-up.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

COMPAT_DIR = Path("/usr/local/cuda/compat")
_LIBCUDA = re.compile(r"^libcuda\.so\.(\d+(?:\.\d+)+)$")

Version = tuple[int, ...]


def parse_version(text: str) -> Version | None:
    parts = text.strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def host_driver_version() -> Version | None:
    """The GPU driver version ``nvidia-smi`` reports (first GPU), or None without a GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in out.splitlines() if line.strip()]
    return parse_version(lines[0]) if lines else None


def compat_driver_version(compat_dir: Path = COMPAT_DIR) -> Version | None:
    """The driver version of the forward-compatibility libraries in ``compat_dir`` (libcuda.so.<version>)."""
    if not compat_dir.is_dir():
        return None
    versions = [parse_version(m[1]) for p in compat_dir.iterdir() if (m := _LIBCUDA.match(p.name))]
    found = [v for v in versions if v is not None]
    return max(found) if found else None


def compat_library_path(
    host: Version | None, compat: Version | None, compat_dir: Path = COMPAT_DIR
) -> str | None:
    """``compat_dir`` when the host driver is older than the compat libraries, else None."""
    if host is None or compat is None or host >= compat:
        return None
    return str(compat_dir)


def library_path_with_compat(current: str | None) -> str | None:
    """``LD_LIBRARY_PATH`` for the model server: the compat dir first when this host needs it."""
    host, compat = host_driver_version(), compat_driver_version()
    extra = compat_library_path(host, compat)
    if extra is None:
        if host is not None:
            logger.info("GPU driver %s; CUDA forward compatibility not needed (compat %s)", host, compat)
        return current
    logger.info("GPU driver %s is older than the image's CUDA driver %s: using %s", host, compat, extra)
    return extra + (":" + current if current else "")

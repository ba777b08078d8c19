"""Refuse to load a model that will not fit in free memory (so a multi-model endpoint can evict and retry)."""

from __future__ import annotations

import logging
from pathlib import Path

import psutil

from container.errors import InsufficientMemoryError

logger = logging.getLogger(__name__)

MB = 1024 * 1024
#: Loaded TorchScript weights + activations take a few times the file size.
MODEL_FILE_FACTOR = 4


def model_files_bytes(model_dir: Path) -> int:
    """Apparent size of the model files (``*.ts``, ``*.pt``, ``*.pth``) under ``model_dir``."""
    total = 0
    for pattern in ("*.ts", "*.pt", "*.pth"):
        total += sum(p.stat().st_size for p in model_dir.rglob(pattern) if p.is_file())
    return total


def required_bytes(model_dir: Path, overhead_mb: int) -> int:
    return MODEL_FILE_FACTOR * model_files_bytes(model_dir) + overhead_mb * MB


def check_memory(model_dir: Path, overhead_mb: int) -> None:
    """Raise :class:`InsufficientMemoryError` when the estimate for ``model_dir`` exceeds available memory."""
    need = required_bytes(model_dir, overhead_mb)
    available = psutil.virtual_memory().available
    logger.info("model %s needs about %d MB; %d MB available", model_dir, need // MB, available // MB)
    if need > available:
        raise InsufficientMemoryError(
            f"model {model_dir} needs about {need // MB} MB ({MODEL_FILE_FACTOR} x model files + "
            f"{overhead_mb} MB) "
            f"but only {available // MB} MB are available; unload another model or use a larger instance"
        )

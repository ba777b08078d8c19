"""The module multi-model-server loads (``default_service_handler``): one class, :class:`HandlerService`.

MMS 1.1.11 requires exactly one class defined in this module; everything else is imported. The class is the
thin MMS edge around :class:`container.handler.ModelHandler`:

* constructor: refuses to load when free memory is short (MemoryError → MMS answers ``POST /models`` with
  507);
* ``initialize``: loads the model; any failure becomes :class:`~container.errors.WorkerLoadAbort` so that MMS
  reports a failed load (500) instead of "loaded" followed by failing invokes;
* ``handle``: one line, delegated.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from container.errors import WorkerLoadAbort
from container.handler import ModelHandler
from container.memory import check_memory
from container.settings import LOAD_FAILURES_DIR, LOADED_DIR

logger = logging.getLogger(__name__)


def _worker_model_dir() -> Path:
    """This MMS worker's model directory: its ``--model-path`` argument (MMS also sets the cwd there)."""
    argv = sys.argv
    if "--model-path" in argv and argv.index("--model-path") + 1 < len(argv):
        return Path(argv[argv.index("--model-path") + 1])
    return Path(os.getcwd())


def _report_load(runtime_dir: Path | None, folder_name: str, message: str) -> None:
    """Leave the load outcome where ``container/serve`` looks (single-model readiness / fail fast)."""
    if runtime_dir is None:
        return
    folder = runtime_dir / folder_name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{os.getpid()}.txt").write_text(message)
    except OSError:
        logger.warning("cannot record the load outcome in %s", folder, exc_info=True)


class HandlerService:
    """MMS custom service: ``initialize(context)`` once per worker, ``handle(data, context)`` per request."""

    def __init__(self) -> None:
        self._handler = ModelHandler()
        check_memory(_worker_model_dir(), self._handler.settings.model_memory_overhead_mb)

    def initialize(self, context: Any) -> None:
        try:
            self._handler.initialize(context)
        except Exception as exc:
            logger.error(
                "model load failed; failing the load so MMS does not report it as loaded", exc_info=True
            )
            _report_load(self._handler.settings.runtime_dir, LOAD_FAILURES_DIR, str(exc))
            raise WorkerLoadAbort(str(exc)) from exc
        _report_load(self._handler.settings.runtime_dir, LOADED_DIR, str(self._handler.model_dir))

    def handle(self, data: Any, context: Any) -> Any:
        return self._handler.handle(data, context)

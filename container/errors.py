"""Container-level errors."""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """A model could not be loaded (bad archive, no bundle, model fails to build); ``http_status`` 500."""

    http_status = 500


class InsufficientMemoryError(MemoryError):
    """Not enough free memory to load another model; MMS answers ``POST /models`` with 507."""

    http_status = 507


class WorkerLoadAbort(BaseException):
    """Raised out of ``initialize`` inside an MMS worker so that the load fails.

    MMS 1.1.11 catches (and only logs) any ``Exception`` from a handler's ``initialize`` and then reports the
    model as loaded, so every later invoke fails. A ``BaseException`` passes through its loader: the worker
    exits before it acknowledges the load, and MMS answers ``POST /models`` with 500 "Failed to start workers"
    and unregisters the model. Never raised outside an MMS worker.
    """

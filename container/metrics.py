"""Per-input metrics as CloudWatch Embedded Metric Format (EMF) log lines: an endpoint's logs become metrics.

A SageMaker endpoint sends the container's stdout to CloudWatch Logs; CloudWatch turns every log event that is
an EMF JSON object (a root ``_aws`` member with ``CloudWatchMetrics`` directives) into metrics, with no agent
and no PutMetricData call. :func:`emit_input_metrics` writes one such line for every input the container
serves (:mod:`container.invocation`), on stdout through the ``container.metrics.emf`` logger (message only,
not propagated, so no prefix breaks the JSON; MMS's log4j configuration passes these lines on unprefixed, see
:mod:`container.model_server`).

Metrics (namespace :data:`NAMESPACE`, overridable with ``SPLEEN_METRICS_NAMESPACE``):

- ``Inputs`` and ``InputsFailed`` (Count): one input, failed or not; ``InputSeconds`` (Seconds);
- ``Stage<Name>Seconds`` (Seconds) for every stage in the report's ``timingsSeconds`` (fetch_decode ->
  ``StageFetchDecodeSeconds``, inference -> ``StageInferenceSeconds``, ...);
- ``FramesFetched``, ``FrameRetries`` and ``Throttles`` (Count) for AHI input (throttled responses include
  botocore's retried attempts);
- ``SpleenVolumeMl`` (None: CloudWatch has no volume unit).

Dimension sets: ``[Service]`` for every metric, and ``[Service, Outcome]`` and ``[Service, VolumeBucket]`` for
``Inputs`` and ``InputsFailed`` only (a second directive: fewer billed custom metrics), with ``Service`` the
endpoint's name (``SPLEEN_METRICS_SERVICE``, set by ``ahi-spleen deploy-*``), ``Outcome`` one of
``succeeded`` / ``client_error`` (4xx) / ``server_error`` (5xx) and ``VolumeBucket`` from
:func:`volume_bucket`. The request ID, input index, error type and model travel as plain properties
(searchable in Logs Insights, no metric cardinality). Set ``SPLEEN_METRICS=off`` to stop the lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)

NAMESPACE = "AHISpleenSeg"
SERVICE = "ahi-spleen-seg"
EMF_LOGGER = "container.metrics.emf"
#: Every metric by ``Service``; only the input counts also by outcome and by volume bucket (each dimension set
#: multiplies the custom metrics CloudWatch bills for).
DIMENSION_SETS = [["Service"]]
BREAKDOWN_SETS = [["Service", "Outcome"], ["Service", "VolumeBucket"]]
BREAKDOWN_METRICS = ("Inputs", "InputsFailed")
#: Upper bounds (mL, exclusive) and names of the spleen volume buckets; above the last: ``ge500mL``.
VOLUME_BUCKETS = ((150.0, "lt150mL"), (300.0, "150to300mL"), (500.0, "300to500mL"))


def namespace() -> str:
    return os.environ.get("SPLEEN_METRICS_NAMESPACE") or NAMESPACE


def service() -> str:
    """The ``Service`` dimension: ``SPLEEN_METRICS_SERVICE`` (``ahi-spleen deploy-*`` sets the endpoint's
    name) or :data:`SERVICE`."""
    return os.environ.get("SPLEEN_METRICS_SERVICE") or SERVICE


def volume_bucket(volume_ml: float | None) -> str:
    """``none`` (no result), ``empty`` (0 mL: no spleen found), then the :data:`VOLUME_BUCKETS` names."""
    if volume_ml is None:
        return "none"
    if volume_ml <= 0:
        return "empty"
    for bound, name in VOLUME_BUCKETS:
        if volume_ml < bound:
            return name
    return "ge500mL"


def stage_metric(stage: str) -> str:
    """``fetch_decode`` -> ``StageFetchDecodeSeconds``."""
    return "Stage" + "".join(part.capitalize() for part in stage.split("_")) + "Seconds"


def _outcome(entry: dict[str, Any]) -> str:
    if entry.get("status") == "succeeded":
        return "succeeded"
    status = (entry.get("error") or {}).get("httpStatus", 500)
    return "client_error" if 400 <= int(status) < 500 else "server_error"


def input_metrics(request_id: str, entry: dict[str, Any], now_ms: int | None = None) -> dict[str, Any]:
    """The EMF document of one input's result ``entry`` (as :mod:`container.invocation` builds it)."""
    report = entry.get("report") or {}
    failed = entry.get("status") != "succeeded"
    values: dict[str, tuple[float, str]] = {
        "Inputs": (1, "Count"),
        "InputsFailed": (1 if failed else 0, "Count"),
    }
    if isinstance(entry.get("seconds"), int | float):
        values["InputSeconds"] = (float(entry["seconds"]), "Seconds")
    for stage, seconds in (report.get("timingsSeconds") or {}).items():
        if stage != "total" and isinstance(seconds, int | float):
            values[stage_metric(stage)] = (float(seconds), "Seconds")
    fetch = report.get("fetch") or {}
    for key, name in (
        ("frames", "FramesFetched"),
        ("frameRetries", "FrameRetries"),
        ("throttles", "Throttles"),
    ):
        if isinstance(fetch.get(key), int):
            values[name] = (fetch[key], "Count")
    volume = entry.get("spleenVolumeMl")
    if isinstance(volume, int | float):
        values["SpleenVolumeMl"] = (float(volume), "None")
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000) if now_ms is None else now_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace(),
                    "Dimensions": DIMENSION_SETS,
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in values.items()],
                },
                {
                    "Namespace": namespace(),
                    "Dimensions": BREAKDOWN_SETS,
                    "Metrics": [{"Name": name, "Unit": values[name][1]} for name in BREAKDOWN_METRICS],
                },
            ],
        },
        "Service": service(),
        "Outcome": _outcome(entry),
        "VolumeBucket": volume_bucket(volume if isinstance(volume, int | float) and not failed else None),
        "RequestId": request_id,
        "InputIndex": entry.get("index"),
    }
    doc.update({name: value for name, (value, _) in values.items()})
    if failed:
        doc["ErrorType"] = (entry.get("error") or {}).get("type")
    model = report.get("model") or {}
    if model.get("name"):
        doc["Model"] = f"{model['name']} {model.get('version', '')}".strip()
    return doc


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at the time of each record (not the stream of its creation)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _emf_logger() -> logging.Logger:
    emf = logging.getLogger(EMF_LOGGER)
    if not emf.handlers:
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        emf.addHandler(handler)
        emf.setLevel(logging.INFO)
        emf.propagate = False
    return emf


def emit_input_metrics(request_id: str, entry: dict[str, Any]) -> None:
    """Write the input's EMF line (one JSON object, one line) unless ``SPLEEN_METRICS=off``."""
    if os.environ.get("SPLEEN_METRICS", "on").lower() in ("off", "0", "false"):
        return
    try:
        line = json.dumps(input_metrics(request_id, entry), separators=(",", ":"), default=str)
    except (TypeError, ValueError) as exc:  # metrics must never fail a request
        logger.warning("request %s: no metrics line: %s", request_id, exc)
        return
    _emf_logger().info(line)

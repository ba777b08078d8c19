"""Validation of CloudWatch Embedded Metric Format documents by the rules of the EMF specification.

https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
(root object with ``_aws``; ``Timestamp`` in epoch milliseconds; ``CloudWatchMetrics`` directives, each with a
``Namespace``, ``Dimensions`` (dimension sets of at most 30 names, each a top-level member whose value is a
string) and ``Metrics`` (at most 100 definitions; ``Name`` referencing a top-level member whose value is a
number or an array of at most 100 numbers; ``Unit`` from the CloudWatch list; ``StorageResolution`` 1 or 60).
"""

from __future__ import annotations

import json
import math
from typing import Any

UNITS = frozenset(
    "Seconds Microseconds Milliseconds Bytes Kilobytes Megabytes Gigabytes Terabytes Bits Kilobits Megabits "
    "Gigabits Terabits Percent Count Bytes/Second Kilobytes/Second Megabytes/Second Gigabytes/Second "
    "Terabytes/Second Bits/Second Kilobits/Second Megabits/Second Gigabits/Second Terabits/Second "
    "Count/Second None".split()
)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _metric_problems(doc: dict[str, Any], metric: Any) -> list[str]:
    name = metric.get("Name") if isinstance(metric, dict) else None
    if not (isinstance(name, str) and 1 <= len(name) <= 1024):
        return [f"metric name {name!r} invalid"]
    problems = []
    value = doc.get(name)
    array = isinstance(value, list) and 0 < len(value) <= 100 and all(_number(v) for v in value)
    if not (_number(value) or array):
        problems.append(f"metric {name}: value {value!r} is not a number or an array of <= 100")
    if "Unit" in metric and metric["Unit"] not in UNITS:
        problems.append(f"metric {name}: unit {metric['Unit']!r} is not a CloudWatch unit")
    if "StorageResolution" in metric and metric["StorageResolution"] not in (1, 60):
        problems.append(f"metric {name}: StorageResolution {metric['StorageResolution']!r}")
    return problems


def _directive_problems(doc: dict[str, Any], d: int, directive: Any) -> list[str]:
    if not isinstance(directive, dict):
        return [f"directive {d} is not an object"]
    problems = []
    ns = directive.get("Namespace")
    if not (isinstance(ns, str) and 1 <= len(ns) <= 1024 and ns.strip()):
        problems.append(f"directive {d}: Namespace {ns!r} invalid")
    dims = directive.get("Dimensions")
    if not isinstance(dims, list):
        problems.append(f"directive {d}: Dimensions is not an array")
        dims = []
    for dim_set in dims:
        if not isinstance(dim_set, list) or len(dim_set) > 30:
            problems.append(f"directive {d}: dimension set {dim_set!r} is not an array of <= 30 names")
            continue
        problems += [
            f"directive {d}: dimension {name!r} is not a top-level string member"
            for name in dim_set
            if not isinstance(doc.get(name), str)
        ]
    metrics = directive.get("Metrics")
    if not isinstance(metrics, list) or len(metrics) > 100:
        return [*problems, f"directive {d}: Metrics is not an array of <= 100 definitions"]
    for metric in metrics:
        problems += _metric_problems(doc, metric)
    return problems


def emf_problems(doc: Any) -> list[str]:
    """Every rule ``doc`` breaks (empty when it is a valid EMF document)."""
    if not isinstance(doc, dict):
        return ["root is not a JSON object"]
    aws = doc.get("_aws")
    if not isinstance(aws, dict):
        return ["no _aws object"]
    problems = []
    ts = aws.get("Timestamp")
    if not (isinstance(ts, int) and not isinstance(ts, bool) and ts > 1_000_000_000_000):
        problems.append(f"Timestamp {ts!r} is not epoch milliseconds")
    directives = aws.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return [*problems, "CloudWatchMetrics is not a non-empty array"]
    for d, directive in enumerate(directives):
        problems += _directive_problems(doc, d, directive)
    return problems


def emf_lines(text: str) -> list[dict[str, Any]]:
    """The log lines of ``text`` that are JSON objects with an ``_aws`` member, parsed."""
    docs = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            docs.append(json.loads(line))
    return docs

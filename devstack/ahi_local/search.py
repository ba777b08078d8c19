"""SearchImageSets: filters, sort and offset-based pagination over image set records."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from .errors import ValidationError
from .ids import now
from .records import ImageSetRecord

STRING_FILTERS = {
    "DICOMPatientId": "DICOMPatientId",
    "DICOMAccessionNumber": "DICOMAccessionNumber",
    "DICOMStudyId": "DICOMStudyId",
    "DICOMStudyInstanceUID": "DICOMStudyInstanceUID",
    "DICOMSeriesInstanceUID": "DICOMSeriesInstanceUID",
}
MAX_RESULTS = 50


def _study_date_time(record: ImageSetRecord) -> str:
    date = str(record.dicom_tags.get("DICOMStudyDate", ""))
    time = str(record.dicom_tags.get("DICOMStudyTime", ""))
    return f"{date}{time.split('.')[0].ljust(6, '0')}" if date else ""


def _date_time_value(value: dict[str, Any]) -> str:
    date = str(value.get("DICOMStudyDate", ""))
    time = str(value.get("DICOMStudyTime", "") or "")
    return f"{date}{time.split('.')[0].ljust(6, '0')}"


def _key_and_value(entry: dict[str, Any]) -> tuple[str, Any]:
    if len(entry) != 1:
        raise ValidationError(
            f"each search filter value must name exactly one attribute, got {sorted(entry)}"
        )
    return next(iter(entry.items()))


def _accessor(key: str) -> Callable[[ImageSetRecord], Any]:
    if key in STRING_FILTERS:
        return lambda r: str(r.dicom_tags.get(STRING_FILTERS[key], ""))
    if key == "createdAt":
        return lambda r: r.created_at
    if key == "updatedAt":
        return lambda r: r.updated_at
    if key == "isPrimary":
        return lambda r: r.is_primary
    if key == "DICOMStudyDateAndTime":
        return _study_date_time
    raise ValidationError(f"unsupported search filter attribute {key!r}")


def _normalise(key: str, value: Any) -> Any:
    if key == "DICOMStudyDateAndTime":
        return _date_time_value(value)
    if key in ("createdAt", "updatedAt"):
        return float(value)
    return value


def _predicate(flt: dict[str, Any]) -> Callable[[ImageSetRecord], bool]:
    operator = flt.get("operator")
    pairs = [_key_and_value(v) for v in flt.get("values", [])]
    keys = {k for k, _ in pairs}
    if len(keys) != 1:
        raise ValidationError(
            f"a search filter's values must all name the same attribute, got {sorted(keys)}"
        )
    key = keys.pop()
    get = _accessor(key)
    values = [_normalise(key, v) for _, v in pairs]
    if operator == "EQUAL":
        if len(values) != 1:
            raise ValidationError(f"operator EQUAL takes exactly one value for {key}, got {len(values)}")
        return lambda r: get(r) == values[0]
    if operator == "BETWEEN":
        if len(values) != 2 or key in STRING_FILTERS or key == "isPrimary":
            raise ValidationError(
                f"operator BETWEEN takes two values of createdAt, updatedAt or "
                f"DICOMStudyDateAndTime, got {len(values)} of {key}"
            )
        low, high = values
        return lambda r: low <= get(r) <= high
    raise ValidationError(f"unknown search operator {operator!r}; use EQUAL or BETWEEN")


def _token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([offset, fingerprint]).encode()).decode()


def _offset(token: str | None, fingerprint: str) -> int:
    if not token:
        return 0
    try:
        offset, seen = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValidationError(f"nextToken {token!r} is not a token this service issued") from exc
    if seen != fingerprint or not isinstance(offset, int) or offset < 0:
        raise ValidationError("nextToken does not belong to this search (criteria changed); start again")
    return offset


def search(
    records: list[ImageSetRecord],
    criteria: dict[str, Any] | None,
    max_results: int | None,
    next_token: str | None,
) -> dict[str, Any]:
    """SearchImageSets response for ``records``. Default order: updatedAt descending, then imageSetId."""
    criteria = criteria or {}
    limit = MAX_RESULTS if max_results is None else max_results
    if not 1 <= limit <= MAX_RESULTS:
        raise ValidationError(f"maxResults {max_results} must be between 1 and {MAX_RESULTS}")
    predicates = [_predicate(f) for f in criteria.get("filters", [])]
    sort = criteria.get("sort") or {"sortField": "updatedAt", "sortOrder": "DESC"}
    get = _accessor(sort.get("sortField", "updatedAt"))
    descending = sort.get("sortOrder", "DESC") == "DESC"
    matched = [r for r in records if all(p(r) for p in predicates)]
    matched.sort(key=lambda r: r.image_set_id)
    matched.sort(key=get, reverse=descending)
    fingerprint = json.dumps(criteria, sort_keys=True, default=str)
    start = _offset(next_token, fingerprint)
    page = matched[start : start + limit]
    out: dict[str, Any] = {"imageSetsMetadataSummaries": [r.summary(now()) for r in page], "sort": sort}
    if start + limit < len(matched):
        out["nextToken"] = _token(start + limit, fingerprint)
    return out


def paginate(
    items: list[Any], max_results: int | None, next_token: str | None, what: str
) -> tuple[list[Any], str | None]:
    """Offset pagination for the List* operations."""
    limit = max_results or 50
    if not 1 <= limit <= 50:
        raise ValidationError(f"maxResults {max_results} for {what} must be between 1 and 50")
    start = _offset(next_token, what)
    end = start + limit
    return items[start:end], (_token(end, what) if end < len(items) else None)

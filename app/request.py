"""What one segmentation run works on: an AHI image set, an AHI study, or a folder of DICOM files.

JSON shapes accepted by :meth:`SegRequest.from_json` (keys are case-sensitive, nothing else is allowed)::

    {"datastoreId": "<32 chars [0-9a-z]>", "imageSetId": "<32 chars [0-9a-z]>"}
    {"datastoreId": "<32 chars [0-9a-z]>", "studyInstanceUid": "<DICOM UID>"}

A DICOM folder is never accepted from JSON (a server must not read arbitrary local paths on a client's
behalf); use :meth:`SegRequest.for_folder`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputNotFoundError, RequestError
from .untrusted import brief, loads

KEY_DATASTORE = "datastoreId"
KEY_IMAGE_SET = "imageSetId"
KEY_STUDY = "studyInstanceUid"
ALLOWED_KEYS = (KEY_DATASTORE, KEY_IMAGE_SET, KEY_STUDY)

#: AWS HealthImaging datastore and image set IDs: exactly 32 characters of [0-9a-z].
AHI_ID_PATTERN = re.compile(r"[0-9a-z]{32}")
#: DICOM UID (PS3.5 §9.1): up to 64 chars, dot-separated numeric components without leading zeros.
UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
UID_MAX_LENGTH = 64


def check_ahi_id(key: str, value: Any) -> str:
    """``value`` if it is a datastore / image set ID; :class:`RequestError` naming ``key`` otherwise."""
    if not isinstance(value, str) or not AHI_ID_PATTERN.fullmatch(value):
        raise RequestError(
            f"{key!r} must be an AWS HealthImaging ID of exactly 32 characters [0-9a-z], got {brief(value)}"
        )
    return value


def _check_uid(key: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > UID_MAX_LENGTH or not UID_PATTERN.fullmatch(value):
        raise RequestError(
            f"{key!r} must be a DICOM UID (digits and dots, at most {UID_MAX_LENGTH} characters, "
            f"no leading zeros in a component), got {brief(value)}"
        )
    return value


def _parse_json_text(obj: str | bytes | bytearray) -> Any:
    try:
        return loads(obj)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from exc


@dataclass(frozen=True)
class SegRequest:
    """One validated request. Exactly one source: (datastore + image set), (datastore + study), or a
    folder."""

    datastore_id: str | None = None
    image_set_id: str | None = None
    study_instance_uid: str | None = None
    dicom_folder: Path | None = None

    @property
    def is_ahi(self) -> bool:
        return self.datastore_id is not None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | str | bytes | bytearray) -> SegRequest:
        """Validate a request object (or its JSON text). Raises :class:`RequestError` (400) naming the
        problem."""
        if isinstance(obj, (str, bytes, bytearray)):
            obj = _parse_json_text(obj)
        if not isinstance(obj, Mapping):
            raise RequestError(
                f"request must be a JSON object with {KEY_DATASTORE!r} and one of {KEY_IMAGE_SET!r} / "
                f"{KEY_STUDY!r}, got {type(obj).__name__}"
            )
        extra = sorted(str(k) for k in obj if k not in ALLOWED_KEYS)
        if extra:
            shown = ", ".join(brief(k) for k in extra[:5]) + (
                f" and {len(extra) - 5} more" if len(extra) > 5 else ""
            )
            raise RequestError(
                f"unknown key(s) in request: {shown}; allowed keys are "
                f"{', '.join(repr(k) for k in ALLOWED_KEYS)}"
            )
        if KEY_DATASTORE not in obj:
            raise RequestError(f"request is missing {KEY_DATASTORE!r}")
        has_image_set, has_study = KEY_IMAGE_SET in obj, KEY_STUDY in obj
        if has_image_set == has_study:
            got = "both" if has_image_set else "neither"
            raise RequestError(f"request needs exactly one of {KEY_IMAGE_SET!r} or {KEY_STUDY!r}, got {got}")
        datastore_id = check_ahi_id(KEY_DATASTORE, obj[KEY_DATASTORE])
        if has_image_set:
            return cls(
                datastore_id=datastore_id, image_set_id=check_ahi_id(KEY_IMAGE_SET, obj[KEY_IMAGE_SET])
            )
        return cls(datastore_id=datastore_id, study_instance_uid=_check_uid(KEY_STUDY, obj[KEY_STUDY]))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SegRequest:
        """Read a request JSON file (the app's ``-i request.json`` input)."""
        path = Path(path)
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise RequestError(f"cannot read request file {str(path)!r}: {exc}") from exc
        try:
            return cls.from_json(text)
        except RequestError as exc:
            raise RequestError(f"request file {str(path)!r}: {exc}") from exc

    @classmethod
    def for_folder(cls, folder: str | os.PathLike[str]) -> SegRequest:
        """A request for a local folder of DICOM files (searched recursively, like the SDK's loader)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise InputNotFoundError(
                f"DICOM input folder {str(folder)!r} does not exist or is not a directory"
            )
        return cls(dicom_folder=folder)

    @classmethod
    def from_input_path(cls, path: str | os.PathLike[str]) -> SegRequest:
        """The app's ``-i`` input: a folder of DICOM files, or a ``.json`` request file for AHI."""
        path = Path(path)
        if path.is_dir():
            return cls.for_folder(path)
        if path.is_file():
            return cls.from_file(path)
        raise InputNotFoundError(
            f"input {str(path)!r} does not exist; pass a folder of DICOM files or a JSON request file "
            f'{{"{KEY_DATASTORE}": ..., "{KEY_IMAGE_SET}": ...}}'
        )

    def to_json(self) -> dict[str, str]:
        """The request as it appears in the report (AHI keys, or the folder path)."""
        if self.dicom_folder is not None:
            return {"dicomFolder": str(self.dicom_folder)}
        out = {KEY_DATASTORE: str(self.datastore_id)}
        if self.image_set_id:
            out[KEY_IMAGE_SET] = self.image_set_id
        if self.study_instance_uid:
            out[KEY_STUDY] = self.study_instance_uid
        return out

    def describe(self) -> str:
        if self.dicom_folder is not None:
            return f"DICOM folder {str(self.dicom_folder)!r}"
        if self.image_set_id:
            return f"image set {self.image_set_id} in datastore {self.datastore_id}"
        return f"study {self.study_instance_uid} in datastore {self.datastore_id}"

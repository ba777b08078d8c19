"""SegRequest validation: exactly the documented JSON shapes, errors that name the problem (HTTP 400)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.errors import InputNotFoundError, RequestError
from app.request import SegRequest

DS = "0123456789abcdef0123456789abcdef"
IS = "fedcba9876543210fedcba9876543210"
STUDY = "1.2.826.0.1.3680043.8.498.1"


def test_image_set_request() -> None:
    req = SegRequest.from_json({"datastoreId": DS, "imageSetId": IS})
    assert (req.datastore_id, req.image_set_id, req.study_instance_uid) == (DS, IS, None)
    assert req.is_ahi
    assert req.to_json() == {"datastoreId": DS, "imageSetId": IS}


def test_study_request_from_json_text() -> None:
    req = SegRequest.from_json(json.dumps({"datastoreId": DS, "studyInstanceUid": STUDY}))
    assert (req.datastore_id, req.image_set_id, req.study_instance_uid) == (DS, None, STUDY)


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (
            {"datastoreId": DS, "imageSetId": IS, "extra": 1, "another": 2},
            r"unknown key\(s\).*'another', 'extra'",
        ),
        ({"imageSetId": IS}, r"missing 'datastoreId'"),
        ({"datastoreId": DS}, r"exactly one of 'imageSetId' or 'studyInstanceUid', got neither"),
        ({"datastoreId": DS, "imageSetId": IS, "studyInstanceUid": STUDY}, r"exactly one .* got both"),
        ({"datastoreId": DS.upper(), "imageSetId": IS}, r"'datastoreId' must be .*32 characters \[0-9a-z\]"),
        ({"datastoreId": DS, "imageSetId": IS[:-1]}, r"'imageSetId' must be .*got 'fedcba"),
        ({"datastoreId": DS, "imageSetId": 12}, r"'imageSetId' must be .*got 12"),
        ({"datastoreId": DS, "studyInstanceUid": "1.02.3"}, r"'studyInstanceUid' must be a DICOM UID"),
        ({"datastoreId": DS, "studyInstanceUid": "1." + "2" * 70}, r"at most 64 characters"),
        ([DS, IS], r"must be a JSON object .* got list"),
        ("{not json", r"not valid JSON"),
    ],
)
def test_bad_requests_are_400_and_say_why(obj: object, match: str) -> None:
    with pytest.raises(RequestError, match=match) as info:
        SegRequest.from_json(obj)  # type: ignore[arg-type]
    assert info.value.http_status == 400


def test_request_file_and_folder_inputs(tmp_path: Path) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps({"datastoreId": DS, "imageSetId": IS}))
    assert SegRequest.from_input_path(request_file).image_set_id == IS
    assert SegRequest.from_input_path(tmp_path).dicom_folder == tmp_path
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"datastoreId": "x", "imageSetId": IS}))
    with pytest.raises(RequestError, match=r"request file .*bad.json.*'datastoreId' must be"):
        SegRequest.from_input_path(bad)
    with pytest.raises(InputNotFoundError, match=r"input .*missing.* does not exist") as info:
        SegRequest.from_input_path(tmp_path / "missing")
    assert info.value.http_status == 404

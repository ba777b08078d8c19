"""AHI's update and copy rules in ahi-local: ``force`` for UIDs (never for a primary image set's), the
patient level of primary image sets, an updated SOPInstanceUID re-files its instance,
``includeStudyImageSets`` and a copy across series."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devstack.clients import s3_client
from devstack.importing import create_datastore, import_folder, wait_image_set_settled
from devstack.synthetic import SeriesSpec, write_series
from tests.support.ahi_metadata import read_metadata

STUDY_UID = "1.2.826.0.1.3680043.10.16.1"


def _update(ahi: Any, ds: str, image_set: str, version: str, attrs: dict[str, Any], **flags: Any) -> dict:
    blob = json.dumps({"SchemaVersion": "1.1", **attrs}).encode()
    result = ahi.update_image_set_metadata(
        datastoreId=ds, imageSetId=image_set, latestVersionId=version,
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": blob}}, **flags,
    )  # fmt: skip
    wait_image_set_settled(ahi, ds, image_set)
    return dict(result)


def test_update_and_copy_rules(ahi: Any, moto_s3: str, tmp_path: Path) -> None:
    first = write_series(
        tmp_path / "a", SeriesSpec(slices=2, rows=8, columns=8, study_uid=STUDY_UID, series_number=1)
    )
    second = write_series(
        tmp_path / "b", SeriesSpec(slices=2, rows=8, columns=8, study_uid=STUDY_UID, series_number=2, seed=3)
    )
    ds = create_datastore(ahi, "rules")
    s3 = s3_client(moto_s3)
    [primary] = import_folder(ahi, s3, ds, tmp_path / "a").image_set_ids
    [other] = import_folder(ahi, s3, ds, tmp_path / "b").image_set_ids
    sop = first.sop_instance_uids[0]
    new_sop = sop + ".9"
    sop_update = {
        "Study": {"Series": {first.series_uid: {"Instances": {sop: {"DICOM": {"SOPInstanceUID": new_sop}}}}}}
    }

    for force in (False, True):
        with pytest.raises(ahi.exceptions.ValidationException, match="is primary: .*not even with force"):
            _update(ahi, ds, primary, "1", sop_update, force=force)
    with pytest.raises(ahi.exceptions.ValidationException, match="Patient-level attributes"):
        _update(ahi, ds, primary, "1", {"Patient": {"DICOM": {"PatientName": "Renamed^Patient"}}})

    copied = ahi.copy_image_set(
        datastoreId=ds,
        sourceImageSetId=primary,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}},
    )["destinationImageSetProperties"]["imageSetId"]
    wait_image_set_settled(ahi, ds, copied)
    wait_image_set_settled(ahi, ds, primary)
    with pytest.raises(ahi.exceptions.ValidationException, match="SOPInstanceUID.*needs force=true"):
        _update(ahi, ds, copied, "1", sop_update)
    _update(ahi, ds, copied, "1", sop_update, force=True)
    instances = read_metadata(ahi, ds, copied)["Study"]["Series"][first.series_uid]["Instances"]
    assert new_sop in instances and sop not in instances
    assert instances[new_sop]["DICOM"]["SOPInstanceUID"] == new_sop
    assert ahi.get_image_set(datastoreId=ds, imageSetId=copied)["overrides"] == {"forced": True}

    study = {"Study": {"DICOM": {"StudyDescription": "whole study"}}}
    with pytest.raises(ahi.exceptions.ValidationException, match="cannot be combined with revertToVersionId"):
        ahi.update_image_set_metadata(
            datastoreId=ds, imageSetId=primary, latestVersionId="1", includeStudyImageSets=True,
            updateImageSetMetadataUpdates={"revertToVersionId": "1"},
        )  # fmt: skip
    result = _update(ahi, ds, primary, "1", study, includeStudyImageSets=True)
    assert result["latestVersionId"] == "2"
    wait_image_set_settled(ahi, ds, other)
    assert read_metadata(ahi, ds, other)["Study"]["DICOM"]["StudyDescription"] == "whole study"
    assert ahi.get_image_set(datastoreId=ds, imageSetId=other)["versionId"] == "2"
    assert read_metadata(ahi, ds, copied)["Study"]["DICOM"]["StudyDescription"] != "whole study"

    into_copy = {
        "sourceImageSet": {"latestVersionId": "2"},
        "destinationImageSet": {"imageSetId": copied, "latestVersionId": "2"},
    }
    with pytest.raises(ahi.exceptions.ValidationException, match="inconsistent metadata .*Series"):
        ahi.copy_image_set(datastoreId=ds, sourceImageSetId=other, copyImageSetInformation=into_copy)
    ahi.copy_image_set(datastoreId=ds, sourceImageSetId=other, copyImageSetInformation=into_copy, force=True)
    wait_image_set_settled(ahi, ds, copied)
    wait_image_set_settled(ahi, ds, other)
    doc = read_metadata(ahi, ds, copied)
    assert list(doc["Study"]["Series"]) == [first.series_uid]  # the destination kept its series
    assert set(second.sop_instance_uids) <= set(doc["Study"]["Series"][first.series_uid]["Instances"])

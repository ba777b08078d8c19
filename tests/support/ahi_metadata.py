"""Test-side reader of AHI image set metadata JSON (written independently of the service's encoder).

:func:`instance_datasets` turns a GetImageSetMetadata document into one pydicom Dataset per SOP instance with
the Patient / Study / Series levels merged in, so tests can compare every top-level attribute with the
original file.
"""

from __future__ import annotations

import base64
import gzip
import json
import warnings
from typing import Any

from pydicom import datadict
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"}


def read_metadata(
    ahi: Any, datastore_id: str, image_set_id: str, version_id: str | None = None
) -> dict[str, Any]:
    """GetImageSetMetadata, gunzipped and parsed."""
    kwargs = {"versionId": version_id} if version_id else {}
    resp = ahi.get_image_set_metadata(datastoreId=datastore_id, imageSetId=image_set_id, **kwargs)
    return json.loads(gzip.decompress(resp["imageSetMetadataBlob"].read()))


def _tag_and_vr(key: str, vrs: dict[str, str]) -> tuple[int, str]:
    if key in vrs:
        tag = int(key, 16) if len(key) == 8 and all(c in "0123456789ABCDEFabcdef" for c in key) else None
        tag = tag if tag is not None else Tag(datadict.tag_for_keyword(key))
        return int(tag), vrs[key]
    tag = datadict.tag_for_keyword(key)
    if tag is None:
        raise KeyError(f"metadata key {key!r} is neither a DICOM keyword nor listed in DICOMVRs")
    return int(tag), datadict.dictionary_VR(tag)


def _value(vr: str, value: Any, vrs: dict[str, str]) -> Any:
    if vr == "SQ":  # items carry their own DICOMVRs for private / ambiguous elements
        return [
            to_dataset({k: v for k, v in item.items() if k != "DICOMVRs"}, item.get("DICOMVRs", {}))
            for item in value or []
        ]
    if vr in BINARY and isinstance(value, str):
        return base64.b64decode(value)
    if vr == "AT" and value is not None:
        return [int(v, 16) for v in value] if isinstance(value, list) else int(value, 16)
    return value


def to_dataset(values: dict[str, Any], vrs: dict[str, str]) -> Dataset:
    ds = Dataset()
    for key, value in values.items():
        tag, vr = _tag_and_vr(key, vrs)
        ds.add(DataElement(tag, vr, _value(vr, value, vrs)))
    return ds


def instance_datasets(document: dict[str, Any]) -> dict[str, tuple[Dataset, dict[str, Any]]]:
    """{SOPInstanceUID: (dataset with all levels merged, the instance's JSON object)}."""
    out = {}
    with warnings.catch_warnings():  # test files carry invalid values on purpose; pydicom warns on each
        warnings.simplefilter("ignore")
        return _instance_datasets(document, out)


def _instance_datasets(
    document: dict[str, Any], out: dict[str, tuple[Dataset, dict[str, Any]]]
) -> dict[str, tuple[Dataset, dict[str, Any]]]:
    patient = document["Patient"]["DICOM"]
    study = document["Study"]["DICOM"]
    for series in document["Study"]["Series"].values():
        for sop_uid, inst in series["Instances"].items():
            merged = {**patient, **study, **series["DICOM"], **inst["DICOM"]}
            out[sop_uid] = (to_dataset(merged, inst.get("DICOMVRs", {})), inst)
    return out


def update_instance_attributes(
    ahi: Any, datastore_id: str, image_set_id: str, series_uid: str, sop_uid: str, attributes: dict[str, Any]
) -> str:
    """Set top-level attributes of one instance with UpdateImageSetMetadata (how values reach an image set
    after import); returns the new version ID."""
    updates = {
        "SchemaVersion": "1.1",
        "Study": {"Series": {series_uid: {"Instances": {sop_uid: {"DICOM": attributes}}}}},
    }
    version = ahi.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id)["versionId"]
    resp = ahi.update_image_set_metadata(
        datastoreId=datastore_id,
        imageSetId=image_set_id,
        latestVersionId=version,
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(updates).encode()}},
    )
    return resp["latestVersionId"]

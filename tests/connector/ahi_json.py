"""Test-local: encode pydicom datasets as AHI metadata JSON (keywords, DS/IS strings, base64, DICOMVRs)."""

from __future__ import annotations

import base64
from typing import Any

from pydicom.dataset import Dataset

BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
PATIENT = {"PatientName", "PatientID", "PatientBirthDate", "PatientSex"}
STUDY = {
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
}
SERIES = {"SeriesInstanceUID", "SeriesNumber", "Modality", "SeriesDescription"}


def _value(elem, vrs: dict[str, str]) -> Any:
    if elem.VR == "SQ":
        return [encode(item, vrs) for item in elem.value]
    if elem.VR in BINARY:
        return base64.b64encode(bytes(elem.value)).decode()
    if elem.value is None or elem.value == "":
        return None
    if elem.VM > 1:
        return [str(v) if elem.VR in ("DS", "IS", "PN") else v for v in elem.value]
    return str(elem.value) if elem.VR in ("DS", "IS", "PN") else elem.value


def encode(ds: Dataset, vrs: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for elem in ds:
        if elem.tag == 0x7FE00010 or elem.tag.group == 2:
            continue
        key = elem.keyword or f"{int(elem.tag):08X}"
        if not elem.keyword:
            vrs[key] = elem.VR
        out[key] = _value(elem, vrs)
    return out


def document(datasets: list[Dataset], frames: dict[str, list[dict]], stored_ts: str) -> dict[str, Any]:
    """One image set document; ``frames[sop_uid]`` gives each instance's ImageFrames list."""
    doc: dict[str, Any] = {
        "SchemaVersion": "1.1",
        "Patient": {"DICOM": {}},
        "Study": {"DICOM": {}, "Series": {}},
    }
    for ds in datasets:
        vrs: dict[str, str] = {}
        attrs = encode(ds, vrs)
        for key in PATIENT & attrs.keys():
            doc["Patient"]["DICOM"][key] = attrs.pop(key)
        for key in STUDY & attrs.keys():
            doc["Study"]["DICOM"][key] = attrs.pop(key)
        series = doc["Study"]["Series"].setdefault(str(ds.SeriesInstanceUID), {"DICOM": {}, "Instances": {}})
        for key in SERIES & attrs.keys():
            series["DICOM"][key] = attrs.pop(key)
        series["Instances"][str(ds.SOPInstanceUID)] = {
            "DICOM": attrs,
            "DICOMVRs": vrs,
            "StoredTransferSyntaxUID": stored_ts,
            "ImageFrames": frames.get(str(ds.SOPInstanceUID), []),
        }
    return doc

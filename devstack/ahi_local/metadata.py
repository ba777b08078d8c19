"""AHI image set metadata JSON from pydicom datasets, and back to flat per-instance attribute maps.

Layout (what GetImageSetMetadata returns, gzip-compressed)::

    {"SchemaVersion": "1.1", "DatastoreID": ..., "ImageSetID": ...,
     "Patient": {"DICOM": {...}},
     "Study": {"DICOM": {...}, "Series": {<SeriesInstanceUID>: {"DICOM": {...}, "Instances": {
         <SOPInstanceUID>: {"DICOM": {...}, "DICOMVRs": {...}, "StoredTransferSyntaxUID": ...,
                            "ImageFrames": [{"ID", "FrameSizeInBytes", "MinPixelValue", "MaxPixelValue",
                                             "PixelDataChecksumFromBaseToFullResolution": [
                                                 {"Width", "Height", "Checksum"}]}]}}}}}}

Values are keyed by DICOM keyword; private, repeating-group and unknown tags by 8-hex tag
(e.g. ``"00091010"``) with their VR in the instance's ``DICOMVRs`` (as are elements whose dictionary VR is
ambiguous); inside sequence items such VRs go in the item's own ``DICOMVRs`` object. Encoding by VR:
text VRs as strings (VM > 1 as lists), DS/IS as their original strings, binary VRs (OB/OW/OD/OF/OL/OV/UN)
base64, AT as 8-hex strings, sequences as lists of objects, numbers as JSON numbers (NaN and +/-Infinity as
the strings "NaN", "Infinity", "-Infinity").

Placement: an attribute of the Patient / Study / Series module goes to that level only when every instance of
the image set has the same value; otherwise it stays in each instance. Merging the levels back over each
instance (instance wins) therefore gives every instance's original top-level attributes.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom import datadict
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

SCHEMA_VERSION = "1.1"
PIXEL_KEYWORDS = frozenset({"PixelData", "FloatPixelData", "DoubleFloatPixelData"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"})
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "US or SS"})

PATIENT_KEYWORDS = frozenset(
    "PatientName PatientID IssuerOfPatientID TypeOfPatientID IssuerOfPatientIDQualifiersSequence "
    "PatientBirthDate PatientBirthTime PatientSex OtherPatientIDsSequence OtherPatientNames EthnicGroup "
    "PatientComments PatientSpeciesDescription PatientSpeciesCodeSequence PatientBreedDescription "
    "PatientBreedCodeSequence ResponsiblePerson ResponsiblePersonRole ResponsibleOrganization "
    "PatientIdentityRemoved DeidentificationMethod DeidentificationMethodCodeSequence "
    "QualityControlSubject PatientBirthName PatientMotherBirthName PatientAddress".split()
)
STUDY_KEYWORDS = frozenset(
    "StudyInstanceUID StudyDate StudyTime ReferringPhysicianName ReferringPhysicianIdentificationSequence "
    "StudyID AccessionNumber IssuerOfAccessionNumberSequence StudyDescription PhysiciansOfRecord "
    "NameOfPhysiciansReadingStudy ProcedureCodeSequence ReferencedStudySequence "
    "AdmittingDiagnosesDescription "
    "PatientAge PatientSize PatientWeight Occupation AdditionalPatientHistory MedicalAlerts Allergies "
    "PregnancyStatus SmokingStatus RequestingService".split()
)
SERIES_KEYWORDS = frozenset(
    "SeriesInstanceUID SeriesNumber Modality SeriesDate SeriesTime SeriesDescription Laterality "
    "PerformingPhysicianName ProtocolName OperatorsName BodyPartExamined PatientPosition "
    "SmallestPixelValueInSeries LargestPixelValueInSeries PerformedProcedureStepStartDate "
    "PerformedProcedureStepStartTime PerformedProcedureStepID PerformedProcedureStepDescription "
    "RequestAttributesSequence ReferencedPerformedProcedureStepSequence FrameOfReferenceUID "
    "PositionReferenceIndicator Manufacturer InstitutionName InstitutionAddress StationName "
    "ManufacturerModelName DeviceSerialNumber SoftwareVersions".split()
)


@dataclasses.dataclass(frozen=True)
class FrameInfo:
    """One stored image frame as listed in ``ImageFrames``."""

    frame_id: str
    size: int
    min_value: float
    max_value: float
    width: int
    height: int
    checksum: int

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.frame_id,
            "FrameSizeInBytes": self.size,
            "MinPixelValue": _number(self.min_value),  # float pixel data may hold NaN / Infinity
            "MaxPixelValue": _number(self.max_value),
            "PixelDataChecksumFromBaseToFullResolution": [
                {"Width": self.width, "Height": self.height, "Checksum": self.checksum}
            ],
        }


@dataclasses.dataclass
class FlatInstance:
    """One instance with all its top-level attributes in one map (levels merged)."""

    series_uid: str
    sop_uid: str
    dicom: dict[str, Any]
    vrs: dict[str, str]
    stored_transfer_syntax: str | None
    frames: list[dict[str, Any]]


def element_key(tag: BaseTag) -> tuple[str, bool]:
    """JSON key of a tag and whether its VR must be recorded in DICOMVRs (private / unknown / repeater)."""
    if tag.is_private:
        return f"{int(tag):08X}", True
    keyword = datadict.keyword_for_tag(tag)
    if keyword and datadict.tag_for_keyword(keyword) == tag:
        return keyword, False
    return f"{int(tag):08X}", True


def _text(value: Any) -> Any:
    if isinstance(value, (list, MultiValue)):
        return [str(v) for v in value]
    return "" if value is None else str(value)


def _number(value: Any) -> Any:
    """A binary number as JSON: ints and finite floats as numbers; NaN and +/-Infinity, which JSON has no
    number for, as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (the DICOM JSON convention of
    fo-dicom and Azure; AHI does not document its choice), so strict JSON parsers accept the document."""
    if isinstance(value, (list, MultiValue)):
        return [_number(v) for v in value]
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return number


def encode_value(elem: DataElement, vrs: dict[str, str]) -> Any:
    """JSON value of one element (see module docstring for the rules)."""
    vr = elem.VR
    value = elem.value
    if vr == "SQ":
        return [_encode_item(item) for item in value]
    if vr in BINARY_VRS:
        if value is None:
            return None
        if isinstance(value, (list, MultiValue)):  # ambiguous VR read as numbers
            return _number(value)
        return base64.b64encode(bytes(value)).decode("ascii")
    if vr == "AT":
        if isinstance(value, (list, MultiValue)):
            return [f"{int(v):08X}" for v in value]
        return None if value is None else f"{int(value):08X}"
    if vr in NUMBER_VRS:
        return _number(value)
    return _text(value)


def _encode_item(item: Dataset) -> dict[str, Any]:
    """A sequence item; VRs of its own private/ambiguous elements go in the item's ``DICOMVRs``."""
    item_vrs: dict[str, str] = {}
    encoded = encode_dataset(item, item_vrs)
    if item_vrs:
        encoded["DICOMVRs"] = item_vrs
    return encoded


def encode_dataset(ds: Dataset, vrs: dict[str, str], skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Encode every element of ``ds`` (except keywords in ``skip``) into a keyword-keyed map."""
    out: dict[str, Any] = {}
    for elem in ds:
        key, record_vr = element_key(elem.tag)
        if key in skip:
            continue
        dict_vr = datadict.dictionary_VR(elem.tag) if not record_vr else None
        if record_vr or dict_vr != elem.VR:
            vrs[key] = elem.VR
        out[key] = encode_value(elem, vrs)
    return out


def flat_instance(
    ds: Dataset, stored_transfer_syntax: str | None, frames: Iterable[FrameInfo]
) -> FlatInstance:
    """All top-level attributes of an imported instance (no pixel data) plus its frame list."""
    vrs: dict[str, str] = {}
    dicom = encode_dataset(ds, vrs, skip=PIXEL_KEYWORDS)
    return FlatInstance(
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        dicom=dicom,
        vrs=vrs,
        stored_transfer_syntax=stored_transfer_syntax,
        frames=[f.to_json() for f in frames],
    )


_MISSING = object()


def _common(instances: list[FlatInstance], keywords: frozenset[str]) -> dict[str, Any]:
    """Attributes of ``keywords`` that every instance has, with the same value."""
    first = instances[0].dicom
    common = {}
    for key in keywords:
        value = first.get(key, _MISSING)
        if value is _MISSING:
            continue
        if all(inst.dicom.get(key, _MISSING) == value for inst in instances[1:]):
            common[key] = value
    return common


def build_document(datastore_id: str, image_set_id: str, instances: list[FlatInstance]) -> dict[str, Any]:
    """The AHI metadata document for ``instances`` (one series per image set, but several are tolerated)."""
    if not instances:
        raise ValueError(f"image set {image_set_id} has no instances")
    patient = _common(instances, PATIENT_KEYWORDS)
    study = _common(instances, STUDY_KEYWORDS)
    series_docs: dict[str, Any] = {}
    for series_uid in dict.fromkeys(inst.series_uid for inst in instances):
        members = [inst for inst in instances if inst.series_uid == series_uid]
        series = _common(members, SERIES_KEYWORDS)
        lifted = set(patient) | set(study) | set(series)
        inst_docs = {}
        for inst in members:
            doc: dict[str, Any] = {"DICOM": {k: v for k, v in inst.dicom.items() if k not in lifted}}
            doc["DICOMVRs"] = dict(inst.vrs)
            if inst.stored_transfer_syntax:
                doc["StoredTransferSyntaxUID"] = inst.stored_transfer_syntax
            doc["ImageFrames"] = list(inst.frames)
            inst_docs[inst.sop_uid] = doc
        series_docs[series_uid] = {"DICOM": series, "Instances": inst_docs}
    return {
        "SchemaVersion": SCHEMA_VERSION,
        "DatastoreID": datastore_id,
        "ImageSetID": image_set_id,
        "Patient": {"DICOM": patient},
        "Study": {"DICOM": study, "Series": series_docs},
    }


def flatten_document(document: Mapping[str, Any]) -> list[FlatInstance]:
    """Inverse of :func:`build_document`: each instance with the levels merged in (instance wins)."""
    patient = document.get("Patient", {}).get("DICOM", {})
    study_doc = document.get("Study", {})
    study = study_doc.get("DICOM", {})
    out = []
    for series_uid, series_doc in study_doc.get("Series", {}).items():
        series = series_doc.get("DICOM", {})
        for sop_uid, inst in series_doc.get("Instances", {}).items():
            dicom = {**patient, **study, **series, **inst.get("DICOM", {})}
            out.append(
                FlatInstance(
                    series_uid=series_uid,
                    sop_uid=sop_uid,
                    dicom=dicom,
                    vrs=dict(inst.get("DICOMVRs", {})),
                    stored_transfer_syntax=inst.get("StoredTransferSyntaxUID"),
                    frames=list(inst.get("ImageFrames", [])),
                )
            )
    return out


def frame_ids(document: Mapping[str, Any]) -> list[str]:
    """Every image frame ID referenced by a document, in document order."""
    ids: list[str] = []
    for series_doc in document.get("Study", {}).get("Series", {}).values():
        for inst in series_doc.get("Instances", {}).values():
            ids.extend(frame["ID"] for frame in inst.get("ImageFrames", []))
    return ids


def _first_value(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def summary_tags(document: Mapping[str, Any]) -> dict[str, Any]:
    """``DICOMTags`` of a SearchImageSets summary, taken from the document (first series / instance)."""
    flat = flatten_document(document)
    first = flat[0].dicom if flat else {}
    names = {
        "DICOMPatientId": "PatientID",
        "DICOMPatientName": "PatientName",
        "DICOMPatientBirthDate": "PatientBirthDate",
        "DICOMPatientSex": "PatientSex",
        "DICOMStudyInstanceUID": "StudyInstanceUID",
        "DICOMStudyId": "StudyID",
        "DICOMStudyDescription": "StudyDescription",
        "DICOMAccessionNumber": "AccessionNumber",
        "DICOMSeriesInstanceUID": "SeriesInstanceUID",
        "DICOMSeriesModality": "Modality",
        "DICOMSeriesBodyPart": "BodyPartExamined",
        "DICOMStudyDate": "StudyDate",
        "DICOMStudyTime": "StudyTime",
    }
    tags: dict[str, Any] = {}
    for name, keyword in names.items():
        value = _first_value(first.get(keyword))
        if value is not None:
            tags[name] = str(value)
    series_number = str(_first_value(first.get("SeriesNumber")) or "").strip()
    if series_number.lstrip("+-").isdigit():
        tags["DICOMSeriesNumber"] = int(series_number)
    return tags

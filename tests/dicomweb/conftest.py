"""Fixtures of the DICOMweb tests: an ahi-local server (session-wide, from tests/conftest.py), a reference
Orthanc with its DICOMweb plugin (module-wide, on a free loopback port, no auth, in a temp dir) and the
corpus both are fed: a phantom CT series, synthetic series in other encodings and the pydicom test files
that are valid for the comparison."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

from devstack.processes import ServerProcess, free_port

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: pydicom test files tried for the comparison; those pydicom cannot decode, those sharing a SOP Instance UID
#: with an earlier one and those whose study-level attributes conflict with an earlier file of the same study
#: (AHI would make them non-primary, which Orthanc has no notion of) are left out at run time.
TESTDATA = [
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "SC_rgb.dcm",
    "emri_small.dcm",
    "MR2_J2KR.dcm",
    "US1_J2KR.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "rtdose.dcm",
    "liver.dcm",
    "rtplan.dcm",
    "rtstruct.dcm",
]


def orthanc_config(folder: Path, port: int) -> dict[str, object]:
    return {
        "Name": "ahi-local-reference",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpTimeout": 60,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": False,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        },
    }


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of the DICOMweb service of a fresh Orthanc (``.../dicom-web``)."""
    if ORTHANC is None or not DICOMWEB_PLUGIN.is_file():
        pytest.skip(
            "Orthanc with its DICOMweb plugin is not installed; as root, scripts/install.sh installs it "
            "(apt-get install orthanc orthanc-dicomweb)"
        )
    folder = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(folder, port)))
    url = f"http://127.0.0.1:{port}"
    with ServerProcess("orthanc", [ORTHANC, str(config)], f"{url}/system", url):
        yield f"{url}/dicom-web"


def client(url: str) -> DICOMwebClient:
    return DICOMwebClient(url)


def reference_corpus() -> tuple[list[Path], dict[str, str]]:
    """The pydicom test files usable for the comparison and, for the others, why not."""
    from tests.local_ahi.roundtrip import expect

    kept: list[Path] = []
    left_out: dict[str, str] = {}
    sops: set[str] = set()
    studies: dict[str, tuple[str, ...]] = {}
    for name in TESTDATA:
        found = get_testdata_file(name)
        if found is None:
            left_out[name] = "not shipped with this pydicom / pydicom-data"
            continue
        path = Path(found)
        verdict = expect(path)
        if not verdict.importable:
            left_out[name] = verdict.reason
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        grouping = tuple(str(ds.get(k, "")) for k in ("PatientID", "StudyDate", "AccessionNumber", "StudyID"))
        if str(ds.SOPInstanceUID) in sops:
            left_out[name] = "SOP Instance UID already used by an earlier file"
            continue
        if studies.setdefault(str(ds.StudyInstanceUID), grouping) != grouping:
            left_out[name] = "study attributes conflict with an earlier file of the same study"
            continue
        sops.add(str(ds.SOPInstanceUID))
        kept.append(path)
    return kept, left_out

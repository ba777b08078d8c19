"""The app path on image sets with metadata the connector cannot make into DICOM: the client gets a 422
naming the instance and the tag, and a study whose only bad series is not CT still segments its CT series.

The bad value is put there the way it reaches AHI in practice, after import: UpdateImageSetMetadata sets
(0018,0050) Slice Thickness of one instance of a secondary-capture series to a DS that is not a number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from ahi_connector import ImageSetExporter
from ahi_connector.errors import DicomizeError
from app.__main__ import main
from app.operators.ahi_data_loader_operator import resolve_study
from app.request import SegRequest
from app.service import SpleenSegService
from container.invocation import error_body
from devstack.clients import ahi_client, s3_client
from devstack.importing import create_datastore, import_folder
from devstack.processes import DUMMY_AWS_ENV
from model import SOURCE_BUNDLE_DIR
from tests.conformance.edge_cases import base, mono
from tests.support.ahi_metadata import update_instance_attributes

BAD_VALUE = "thick"


@dataclass(frozen=True)
class BadStudy:
    datastore_id: str
    study_uid: str
    ct_series_uid: str
    ct_image_set_id: str
    bad_image_set_id: str
    bad_sop_uid: str


@pytest.fixture(scope="module")
def bad_study(ahi_local: str, moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> BadStudy:
    from model.phantoms import generate_phantom, write_dicom_series

    root = tmp_path_factory.mktemp("bad_series_study")
    phantom = generate_phantom(seed=3, shape=(24, 96, 96), spacing=(3.0, 3.0, 3.0))
    paths = write_dicom_series(phantom, root / "import" / "ct")
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    other = root / "import" / "sc"
    other.mkdir()
    sc_series = pydicom.uid.generate_uid()
    sops = []
    for k in range(2):
        ds = base(series=sc_series)
        ds.StudyInstanceUID = first.StudyInstanceUID
        ds.PatientID, ds.PatientName = first.PatientID, first.PatientName
        ds.SliceThickness = "2.5"
        mono(ds)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.save_as(other / f"sc{k}.dcm", enforce_file_format=True)
        sops.append(str(ds.SOPInstanceUID))
    ahi = ahi_client(ahi_local)
    datastore_id = create_datastore(ahi, "bad-series")
    result = import_folder(ahi, s3_client(moto_s3), datastore_id, root / "import")
    assert result.job_status == "COMPLETED" and not result.failure, result.failure
    image_set_of: dict[str, str] = {}
    for image_set_id in result.image_set_ids:
        doc = ImageSetExporter(ahi).get_metadata(datastore_id, image_set_id)
        for uid in doc.series_uids():
            image_set_of[uid] = image_set_id
    bad = image_set_of[sc_series]
    update_instance_attributes(ahi, datastore_id, bad, sc_series, sops[1], {"SliceThickness": BAD_VALUE})
    return BadStudy(
        datastore_id,
        str(first.StudyInstanceUID),
        str(first.SeriesInstanceUID),
        image_set_of[str(first.SeriesInstanceUID)],
        bad,
        sops[1],
    )


@pytest.fixture(scope="module")
def service(ahi_local: str) -> Any:
    with SpleenSegService(SOURCE_BUNDLE_DIR, ahi_client=ahi_client(ahi_local)) as svc:
        yield svc


def _tag_message(study: BadStudy) -> str:
    return rf"instance {study.bad_sop_uid} .*\(0018,0050\) SliceThickness: value '{BAD_VALUE}' is not valid"


def test_bad_image_set_is_a_422_naming_instance_and_tag(
    service: Any, bad_study: BadStudy, tmp_path: Path
) -> None:
    request = SegRequest.from_json(
        {"datastoreId": bad_study.datastore_id, "imageSetId": bad_study.bad_image_set_id}
    )
    with pytest.raises(DicomizeError, match=_tag_message(bad_study)) as info:
        service.run(request, tmp_path)
    assert info.value.http_status == 422
    status, body = error_body(info.value, "req-1")  # what the container answers
    assert status == 422 and body["type"] == "DicomizeError" and bad_study.bad_sop_uid in body["message"]


def test_python_m_app_reports_the_422(
    ahi_local: str,
    bad_study: BadStudy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", ahi_local)
    for key, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    request_file = tmp_path / "request.json"
    request_file.write_text(
        json.dumps({"datastoreId": bad_study.datastore_id, "imageSetId": bad_study.bad_image_set_id})
    )
    status = main(["app", "-i", str(request_file), "-o", str(tmp_path / "out"), "-m", str(SOURCE_BUNDLE_DIR)])
    assert status == 2
    assert "DicomizeError, HTTP 422" in caplog.text and bad_study.bad_sop_uid in caplog.text


def test_study_selection_skips_the_bad_non_ct_series(ahi_local: str, bad_study: BadStudy) -> None:
    with ImageSetExporter(ahi_client(ahi_local)) as exporter:
        chosen = resolve_study(exporter, bad_study.datastore_id, bad_study.study_uid)
    assert chosen == (bad_study.ct_image_set_id, bad_study.ct_series_uid)


def test_study_with_a_bad_non_ct_series_still_segments_its_ct_series(
    service: Any, bad_study: BadStudy, tmp_path: Path
) -> None:
    request = SegRequest.from_json(
        {"datastoreId": bad_study.datastore_id, "studyInstanceUid": bad_study.study_uid}
    )
    result = service.run(request, tmp_path)
    seg = pydicom.dcmread(result.seg_path)
    referenced = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert seg.Modality == "SEG" and referenced == bad_study.ct_series_uid

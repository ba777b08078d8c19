"""The connector's DICOMweb side against a real ahi-local: STOW-RS write-back (image set in the answer, or
found with SearchImageSets), failures with their reason, and reading a series through WADO-RS (exporter and
``ahi-export --via dicomweb``) to the same pixels and geometry as the native GetImageFrame path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from ahi_connector import ImageSetExporter
from ahi_connector.cli import main as ahi_export
from ahi_connector.dicomweb import DicomWebSource, StoredInstance, locate_image_sets, require_stored
from ahi_connector.errors import AHIConfigError, AHIRequestError
from devstack.clients import ahi_client, dicomweb_client
from devstack.importing import create_datastore
from devstack.processes import DUMMY_AWS_ENV
from model.phantoms import generate_phantom, write_dicom_series


@pytest.fixture(scope="module")
def stored(ahi_local: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ahi = ahi_client(ahi_local)
    datastore_id = create_datastore(ahi, "dicomweb-connector")
    phantom = generate_phantom(11, shape=(5, 40, 40), spacing=(2.5, 1.5, 1.5))
    paths = write_dicom_series(phantom, tmp_path_factory.mktemp("dicomweb-connector"))
    client = dicomweb_client(ahi_local)
    result = require_stored(client.store_instances(datastore_id, [p.read_bytes() for p in paths]), "phantom")
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    return {
        "ahi": ahi,
        "client": client,
        "id": datastore_id,
        "paths": paths,
        "result": result,
        "study": str(first.StudyInstanceUID),
        "series": str(first.SeriesInstanceUID),
        "url": ahi_local,
    }


def test_stow_answer_names_the_image_set(stored: dict[str, Any]) -> None:
    result = stored["result"]
    assert result.status == 200 and len(result.stored) == len(stored["paths"])
    (image_set_id,) = result.image_set_ids
    assert locate_image_sets(stored["ahi"], stored["id"], stored["paths"][0]) == [image_set_id]
    assert (
        StoredInstance("1.2", "3.4", "https://h/datastore/d/studies/1/series/2/instances/3").image_set_id
        is None
    )


def test_stow_failure_raises_with_the_reason(stored: dict[str, Any]) -> None:
    answer = stored["client"].store_instances(stored["id"], [b"not a DICOM file"])
    assert answer.status == 409 and answer.stored == ()
    with pytest.raises(AHIRequestError, match=r"FailureReason 0xC000.*not a DICOM Part 10 instance"):
        require_stored(answer, "seg.dcm")


def test_qido_through_the_client(stored: dict[str, Any]) -> None:
    client = stored["client"]
    studies = client.search_studies(stored["id"], StudyInstanceUID=stored["study"])
    assert [s["0020000D"]["Value"][0] for s in studies] == [stored["study"]]
    instances = client.search_instances(stored["id"], stored["study"], stored["series"])
    assert len(instances) == len(stored["paths"])
    with pytest.raises(AHIRequestError, match="study search does not support attribute 'Modality'") as info:
        client.search_studies(stored["id"], Modality="CT")
    assert info.value.http_status == 400


def test_exporter_reads_through_wado_rs_like_the_native_api(stored: dict[str, Any]) -> None:
    (image_set_id,) = stored["result"].image_set_ids
    source = DicomWebSource(stored["client"], stored["study"])
    with ImageSetExporter(stored["ahi"]) as native, ImageSetExporter(source) as web:
        a = native.to_datasets(stored["id"], image_set_id)
        b = web.to_datasets(stored["id"], image_set_id)
        assert [d.SOPInstanceUID for d in a] == [d.SOPInstanceUID for d in b]
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x.pixel_array, y.pixel_array)
            assert x.ImagePositionPatient == y.ImagePositionPatient and x.PixelSpacing == y.PixelSpacing
        va = native.to_volume(stored["id"], image_set_id, stored["series"])
        vb = web.to_volume(stored["id"], image_set_id, stored["series"])
    assert np.array_equal(va.array, vb.array)
    assert np.allclose(va.affine, vb.affine)


def test_ahi_export_via_dicomweb(
    stored: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    (image_set_id,) = stored["result"].image_set_ids
    common = [stored["id"], image_set_id, "--endpoint-url", stored["url"], "--format", "npz"]
    assert ahi_export([*common, "-o", str(tmp_path / "native")]) == 0
    assert (
        ahi_export([*common, "-o", str(tmp_path / "web"), "--via", "dicomweb", "--study", stored["study"]])
        == 0
    )
    (native,) = (tmp_path / "native").glob("*.npz")
    (web,) = (tmp_path / "web").glob("*.npz")
    with np.load(native) as x, np.load(web) as y:
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            assert np.array_equal(x[key], y[key]), key
    with pytest.raises(AHIConfigError, match="--via dicomweb needs --study"):
        from ahi_connector.cli import build_parser, run

        run(build_parser().parse_args([*common, "-o", str(tmp_path / "x"), "--via", "dicomweb"]))


def test_client_retries_throttling_and_reports_when_it_persists(
    stored: dict[str, Any], tmp_path: Path
) -> None:
    """ahi-local's fault injection covers the DICOMweb operations too: 30 % throttled frame calls are ridden
    out by the client's retries; 100 % ends in an error naming the operation and the cause."""
    import boto3.session
    import requests

    from ahi_connector.dicomweb import DicomWebClient
    from devstack.processes import ahi_local_server

    session = boto3.session.Session(**{k.lower(): v for k, v in DUMMY_AWS_ENV.items() if "KEY" in k})
    flags = ["--enable-faults", "--throttle-rate", "0.3", "--fault-operation", "GetDICOMInstanceFrames",
             "--fault-seed", "7"]  # fmt: skip
    with ahi_local_server(tmp_path / "faulty", extra_args=flags) as url:
        datastore_id = create_datastore(ahi_client(url), "dicomweb-faults")
        client = DicomWebClient(url, "us-east-1", session, max_attempts=8)
        require_stored(client.store_instances(datastore_id, [p.read_bytes() for p in stored["paths"]]), "ct")
        sops = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in stored["paths"]]
        where = (datastore_id, stored["study"], stored["series"])
        assert all(len(client.frames(*where, str(sop), [1])[0]) == 40 * 40 * 2 for sop in sops)
        requests.put(f"{url}/_local/faults", json={"throttle_rate": 1.0}, timeout=10).raise_for_status()
        impatient = DicomWebClient(url, "us-east-1", session, max_attempts=3)
        with pytest.raises(AHIRequestError, match=r"Frames \[1\].*3 attempts.*HTTP 429.*Rate exceeded"):
            impatient.frames(*where, str(sops[0]), [1])

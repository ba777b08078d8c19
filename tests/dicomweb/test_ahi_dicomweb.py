"""ahi-local's DICOMweb against its own native API and AHI's documented rules: one store for both interfaces,
the import job's primary / non-primary placement, stored-syntax frames, bulk data, and the DICOMweb status
codes (400/404/406/409/413/415) with a reason for bad requests."""

from __future__ import annotations

import gzip
import json
import re
import socket
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import imagecodecs
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from devstack.ahi_local.frames import HTJ2K_LOSSLESS_RPCL as HTJ2K  # what ahi-local stores lossless frames as
from devstack.clients import ahi_client, s3_client
from devstack.importing import create_datastore, import_folder
from devstack.synthetic import SeriesSpec, write_series

JSON = {"Accept": "application/dicom+json"}


def _multipart(
    bodies: list[bytes], boundary: str = "b0undary", part_type: str = "application/dicom"
) -> bytes:
    out = b""
    for body in bodies:
        out += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def _stow_headers(boundary: str = "b0undary") -> dict[str, str]:
    return {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}', **JSON}


@pytest.fixture(scope="module")
def stack(ahi_local: str, moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ahi = ahi_client(ahi_local)
    datastore_id = create_datastore(ahi, "dicomweb-local")
    work = tmp_path_factory.mktemp("dicomweb-local")
    imported = write_series(
        work / "imported", SeriesSpec(slices=3, rows=32, columns=32, patient_id="IMP-1", seed=5)
    )
    result = import_folder(ahi, s3_client(moto_s3), datastore_id, work / "imported")
    stowed = write_series(
        work / "stowed", SeriesSpec(slices=2, rows=16, columns=24, patient_id="STOW-1", seed=6)
    )
    base = f"{ahi_local}/datastore/{datastore_id}"
    return {
        "ahi": ahi,
        "id": datastore_id,
        "base": base,
        "imported": imported,
        "import": result,
        "stowed": stowed,
        "work": work,
        "dw": DICOMwebClient(base),
    }


def test_stow_is_visible_to_the_native_api(stack: dict[str, Any]) -> None:
    stowed = stack["stowed"]
    body = _multipart([Path(p).read_bytes() for p in stowed.paths])
    r = requests.post(f"{stack['base']}/studies", data=body, headers=_stow_headers(), timeout=60)
    assert r.status_code == 200, r.text
    refs = r.json()["00081199"]["Value"]
    set_ids = {urlparse(ref["00081190"]["Value"][0]).query.removeprefix("imageSetId=") for ref in refs}
    assert len(set_ids) == 1
    image_set_id = set_ids.pop()
    blob = stack["ahi"].get_image_set_metadata(datastoreId=stack["id"], imageSetId=image_set_id)
    document = json.loads(gzip.decompress(blob["imageSetMetadataBlob"].read()))
    instances = document["Study"]["Series"][stowed.series_uid]["Instances"]
    assert sorted(instances) == sorted(stowed.sop_instance_uids)
    props = stack["ahi"].get_image_set(datastoreId=stack["id"], imageSetId=image_set_id)
    assert props["isPrimary"] is True


def test_import_is_visible_to_qido_and_wado(stack: dict[str, Any]) -> None:
    imported, dw = stack["imported"], stack["dw"]
    found = dw.search_for_instances(imported.study_uid, imported.series_uid)
    assert sorted(i["00080018"]["Value"][0] for i in found) == sorted(imported.sop_instance_uids)
    (image_set_id,) = stack["import"].image_set_ids
    blob = stack["ahi"].get_image_set_metadata(datastoreId=stack["id"], imageSetId=image_set_id)
    document = json.loads(gzip.decompress(blob["imageSetMetadataBlob"].read()))
    inst = document["Study"]["Series"][imported.series_uid]["Instances"][imported.sop_instance_uids[0]]
    frame_meta = inst["ImageFrames"][0]
    frames = dw.retrieve_instance_frames(
        imported.study_uid, imported.series_uid, imported.sop_instance_uids[0], [1]
    )
    # The uncompressed frame is exactly the pixel data whose CRC32 the native metadata records.
    checksum = frame_meta["PixelDataChecksumFromBaseToFullResolution"][0]["Checksum"]
    assert zlib.crc32(bytes(frames[0])) == checksum
    assert np.array_equal(np.frombuffer(bytes(frames[0]), "<i2").reshape(32, 32), imported.pixels[0])


def test_frames_in_stored_transfer_syntax(stack: dict[str, Any]) -> None:
    imported = stack["imported"]
    url = (
        f"{stack['base']}/studies/{imported.study_uid}/series/{imported.series_uid}/instances/"
        f"{imported.sop_instance_uids[1]}/frames/1"
    )
    r = requests.get(
        url, headers={"Accept": f'multipart/related; type="image/jphc"; transfer-syntax={HTJ2K}'}, timeout=30
    )
    assert r.status_code == 200, r.text
    assert 'type="image/jphc"' in r.headers["Content-Type"]
    boundary = r.headers["Content-Type"].split("boundary=")[1]
    part = r.content.split(f"--{boundary}".encode())[1]
    head, _, data = part.partition(b"\r\n\r\n")
    assert b"image/jphc" in head
    assert np.array_equal(imagecodecs.htj2k_decode(data[:-2]), imported.pixels[1])
    instance = requests.get(
        url.rsplit("/frames", 1)[0], headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30
    )
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(instance.content))
    assert str(ds.file_meta.TransferSyntaxUID) == HTJ2K


def test_pixel_data_bulk_data_uri(stack: dict[str, Any]) -> None:
    imported, dw = stack["imported"], stack["dw"]
    meta = dw.retrieve_instance_metadata(
        imported.study_uid, imported.series_uid, imported.sop_instance_uids[2]
    )
    uri = meta["7FE00010"]["BulkDataURI"]
    (data,) = dw.retrieve_bulkdata(uri)
    assert np.array_equal(np.frombuffer(data, "<i2").reshape(32, 32), imported.pixels[2])


def test_conflicting_study_goes_non_primary_and_needs_image_set_id(stack: dict[str, Any]) -> None:
    """Same study, same series, other Patient ID: a non-primary image set, as an import would make it;
    QIDO and WADO-RS without ``imageSetId`` do not see it, with it they do."""
    imported = stack["imported"]
    spec = SeriesSpec(
        slices=1,
        rows=32,
        columns=32,
        patient_id="OTHER",
        study_uid=imported.study_uid,
        series_uid=imported.series_uid,
        seed=9,
    )
    other = write_series(stack["work"] / "conflict", spec)
    body = _multipart([Path(other.paths[0]).read_bytes()])
    r = requests.post(
        f"{stack['base']}/studies/{imported.study_uid}", data=body, headers=_stow_headers(), timeout=60
    )
    assert r.status_code == 200, r.text
    retrieve = r.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
    image_set_id = urlparse(retrieve).query.removeprefix("imageSetId=")
    assert stack["ahi"].get_image_set(datastoreId=stack["id"], imageSetId=image_set_id)["isPrimary"] is False
    sop = other.sop_instance_uids[0]
    listed = stack["dw"].search_for_instances(imported.study_uid, imported.series_uid)
    assert sop not in {i["00080018"]["Value"][0] for i in listed}
    path = (
        f"{stack['base']}/studies/{imported.study_uid}/series/{imported.series_uid}/instances/{sop}/metadata"
    )
    missing = requests.get(path, headers=JSON, timeout=30)
    assert missing.status_code == 404 and "not found" in missing.json()["message"]
    found = requests.get(f"{path}?imageSetId={image_set_id}", headers=JSON, timeout=30)
    assert found.status_code == 200 and found.json()[0]["00100020"]["Value"] == ["OTHER"]


@pytest.mark.parametrize(
    ("content_type", "body", "status", "reason"),
    [
        ("application/json", b"{}", 415, "is not accepted"),
        ('multipart/related; type="application/dicom+json"; boundary=x', b"--x--", 415, "metadata \\+ bulk"),
        ('multipart/related; type="application/dicom"', b"--x--", 400, "no boundary"),
        ('multipart/related; type="application/dicom"; boundary=x', b"garbage", 400, "never occurs"),
        (
            'multipart/related; type="application/dicom"; boundary=x',
            b"--x\r\n\r\nDICM",
            400,
            "no closing delimiter",
        ),
        (
            'multipart/related; type="application/dicom"; boundary=x',
            b"--x\r\nContent-Type: image/png\r\n\r\n123\r\n--x--",
            415,
            "every part must be",
        ),
    ],
)
def test_stow_bad_requests(
    stack: dict[str, Any], content_type: str, body: bytes, status: int, reason: str
) -> None:
    r = requests.post(
        f"{stack['base']}/studies", data=body, headers={"Content-Type": content_type}, timeout=30
    )
    assert r.status_code == status, r.text
    assert re.search(reason, r.json()["message"]), r.json()
    assert r.headers["Warning"].startswith("299 ")


def test_stow_not_dicom_is_a_conflict_with_a_reason(stack: dict[str, Any]) -> None:
    r = requests.post(
        f"{stack['base']}/studies",
        data=_multipart([b"not dicom at all"]),
        headers=_stow_headers(),
        timeout=30,
    )
    assert r.status_code == 409
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert "not a DICOM Part 10 instance" in r.headers["Warning"]


def test_stow_over_one_gigabyte_is_413(stack: dict[str, Any]) -> None:
    """A declared length over 1 GB is refused before any byte of the body is read."""
    url = urlparse(stack["base"])
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(
            f"POST {url.path}/studies HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Type: application/dicom\r\nContent-Length: {(1 << 30) + 1}\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            chunks.append(chunk)
        answer = b"".join(chunks).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "StoreDICOM takes up to 1 GB per request" in answer


def test_unknown_resources_are_404(stack: dict[str, Any]) -> None:
    imported, base = stack["imported"], stack["base"]
    series = f"{base}/studies/{imported.study_uid}/series/{imported.series_uid}"
    cases = {
        f"{base}/studies/1.2.3/series/4.5.6/metadata": "series 4.5.6 of study 1.2.3 not found",
        f"{series}/instances/1.2.3.4/metadata": "instance 1.2.3.4 not found",
        f"{series}/instances/{imported.sop_instance_uids[0]}/frames/2": "there is no frame 2",
        f"{base.rsplit('/', 1)[0]}/{'0' * 32}/studies": "datastore 0{32} not found",
        f"{series}": "no operation matches",
    }
    for url, reason in cases.items():
        r = requests.get(url, headers=JSON, timeout=30)
        assert r.status_code == 404, (url, r.text)
        assert re.search(reason, r.json()["message"]), (url, r.json())


def test_unacceptable_accept_is_406(stack: dict[str, Any]) -> None:
    imported, base = stack["imported"], stack["base"]
    series = f"{base}/studies/{imported.study_uid}/series/{imported.series_uid}"
    instance = f"{series}/instances/{imported.sop_instance_uids[0]}"
    cases = {
        f"{base}/studies": 'multipart/related; type="application/dicom+xml"',
        f"{instance}/metadata": "application/xml",
        f"{instance}/frames/1": 'multipart/related; type="image/png"',
        instance: "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50",
    }
    for url, accept in cases.items():
        r = requests.get(url, headers={"Accept": accept}, timeout=30)
        assert r.status_code == 406, (url, r.text)
        assert "available" in r.json()["message"] or "answers" in r.json()["message"]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SeriesDescription=x", "study search does not support attribute 'SeriesDescription'"),
        ("limit=0", "limit=0 is out of range"),
        ("offset=-1", "offset=-1 is out of range"),
        ("limit=ten", "'ten' is not an integer"),
        ("NotAKeyword=1", "neither a DICOM keyword"),
    ],
)
def test_qido_bad_queries_are_400(stack: dict[str, Any], query: str, reason: str) -> None:
    r = requests.get(f"{stack['base']}/studies?{query}", headers=JSON, timeout=30)
    assert r.status_code == 400
    assert reason in r.json()["message"]


def test_binary_attributes_over_one_megabyte_are_bulk_data(stack: dict[str, Any]) -> None:
    """An instance with a 1.5 MB private OB element and a 1 kB one: the big one is a BulkDataURI whose
    bulk data is the element's bytes, the small one stays InlineBinary."""
    spec = SeriesSpec(slices=1, rows=16, columns=16, patient_id="BULK-1", seed=12)
    series = write_series(stack["work"] / "bulk", spec)
    ds = pydicom.dcmread(series.paths[0])
    big, small = np.random.default_rng(1).bytes(1_500_000), b"\x01\x02" * 512
    block = ds.private_block(0x0011, "ahi-local bulk test", create=True)
    block.add_new(0x01, "OB", big)
    block.add_new(0x02, "OB", small)
    buffer = pydicom.filebase.DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    r = requests.post(
        f"{stack['base']}/studies", data=_multipart([buffer.getvalue()]), headers=_stow_headers(), timeout=60
    )
    assert r.status_code == 200, r.text
    meta = stack["dw"].retrieve_instance_metadata(
        series.study_uid, series.series_uid, series.sop_instance_uids[0]
    )
    assert "InlineBinary" in meta["00111002"]
    (data,) = stack["dw"].retrieve_bulkdata(meta["00111001"]["BulkDataURI"])
    assert data == big

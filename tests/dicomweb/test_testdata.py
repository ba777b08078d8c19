"""Every DICOM file shipped with pydicom and pydicom-data that ahi-local imports, stored with STOW-RS (raw
Part 10 bytes, one request per round) and read back with WADO-RS: the metadata equals pydicom's DICOM JSON of
the original (every shared top-level attribute) and the uncompressed instance decodes to pydicom's pixels of
the original (lossy JPEG within 2). Files pydicom itself cannot decode are checked for metadata only."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from pydicom.data import get_testdata_files
from pydicom.pixels import pixel_array

from ahi_connector.multipart import split_multipart
from devstack.clients import ahi_client
from devstack.importing import create_datastore
from tests.dicomweb.test_conformance import _original_json, _same_json
from tests.local_ahi.roundtrip import expect, rounds_without_duplicate_sops

ELE = "1.2.840.10008.1.2.1"
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.91"}
MAX_FRAMES_WHOLE = 32
FILES = sorted({Path(p) for p in get_testdata_files() if Path(p).is_file()})


def _read(path: Path, **kwargs: Any) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, **kwargs)


@pytest.fixture(scope="module")
def stored(ahi_local: str) -> dict[str, Any]:
    ahi = ahi_client(ahi_local)
    importable = [e for e in (expect(p) for p in FILES) if e.importable]
    where: dict[Path, str] = {}
    for number, batch in enumerate(rounds_without_duplicate_sops(importable)):
        datastore_id = create_datastore(ahi, f"dicomweb-testdata-{number}")
        boundary = "testdata-boundary"
        body = (
            b"".join(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + e.path.read_bytes()
                + b"\r\n"
                for e in batch
            )
            + f"--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
        r = requests.post(
            f"{ahi_local}/datastore/{datastore_id}/studies", data=body, headers=headers, timeout=300
        )
        assert r.status_code == 200, (r.status_code, r.headers.get("Warning"))
        where.update({e.path: f"{ahi_local}/datastore/{datastore_id}" for e in batch})
    return where


def test_every_importable_file_is_stored(stored: dict[Path, str]) -> None:
    assert len(stored) >= 150


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_wado_rs_returns_the_original(stored: dict[Path, str], path: Path) -> None:
    if path not in stored:
        pytest.skip("not importable (tests/conformance/test_corpus.py checks its rejection)")
    original = _read(path)
    url = (
        f"{stored[path]}/studies/{original.StudyInstanceUID}/series/{original.SeriesInstanceUID}/instances/"
        f"{original.SOPInstanceUID}"
    )
    meta = requests.get(f"{url}/metadata", headers={"Accept": "application/dicom+json"}, timeout=60)
    assert meta.status_code == 200, meta.text
    assert _same_json(meta.json()[0], _original_json(original)) == []
    has_pixels = any(k in original for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    frames = int(original.get("NumberOfFrames", 1) or 1) if has_pixels else 0
    if frames > MAX_FRAMES_WHOLE:
        _check_sampled_frames(url, original, frames)
        return
    answer = requests.get(url, headers={"Accept": f"application/dicom; transfer-syntax={ELE}"}, timeout=120)
    assert answer.status_code == 200, answer.text
    mine = _read(io.BytesIO(answer.content))
    assert str(mine.file_meta.TransferSyntaxUID) == ELE
    if not has_pixels:
        return
    try:
        expected = original.pixel_array
    except Exception as exc:  # pydicom cannot be the oracle for this file
        pytest.skip(f"pydicom cannot decode the original: {type(exc).__name__}")
    _assert_pixels(mine.pixel_array, expected, original)


def _assert_pixels(got: np.ndarray, expected: np.ndarray, original: pydicom.Dataset) -> None:
    assert got.shape == expected.shape
    if str(original.file_meta.TransferSyntaxUID) in LOSSY:
        assert np.abs(got.astype(float) - expected.astype(float)).max() <= 2
    else:
        assert np.array_equal(got, expected)


def _check_sampled_frames(url: str, original: pydicom.Dataset, count: int) -> None:
    """Long multi-frame files: first, middle and last frame through GetDICOMInstanceFrames (uncompressed),
    against pydicom's decode of the same frames of the original (whole-instance reads of 100+ colour JPEG
    frames would dominate the suite's time)."""
    numbers = [1, count // 2, count]
    accept = f'multipart/related; type="application/octet-stream"; transfer-syntax={ELE}'
    answer = requests.get(
        f"{url}/frames/{','.join(map(str, numbers))}", headers={"Accept": accept}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    parts = split_multipart(answer.content, answer.headers["Content-Type"].split("boundary=")[1])
    for number, part in zip(numbers, parts, strict=True):
        expected = pixel_array(original, index=number - 1)
        got = np.frombuffer(part.body, dtype=expected.dtype.newbyteorder("<")).reshape(expected.shape)
        _assert_pixels(got, expected, original)

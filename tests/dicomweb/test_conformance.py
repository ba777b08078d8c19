"""Differential conformance: the same files stored with STOW-RS in ahi-local and in Orthanc (+ its DICOMweb
plugin), then both queried with dicomweb-client and compared: STOW responses, QIDO results (attributes,
matching, paging), WADO-RS metadata (DICOM JSON), instances and frames (decoded pixels).

Where AHI differs from Orthanc on purpose, the difference is named in :data:`DELIBERATE` with the AHI
developer guide page that says so (the README's DICOMweb table lists the same); every other difference fails.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from devstack.clients import ahi_client
from devstack.importing import create_datastore
from devstack.synthetic import SeriesSpec, write_series
from model.phantoms import generate_phantom, write_dicom_series
from tests.dicomweb.conftest import reference_corpus

logger = logging.getLogger(__name__)
ELE = "1.2.840.10008.1.2.1"
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}

#: attribute -> why AHI (and so ahi-local) answers it and Orthanc does not, or the other way round.
DELIBERATE = {
    # QIDO: AHI returns the PS3.18 Table 10.6.3-3 attributes an image set holds; Orthanc returns its own
    # "main DICOM tags" list, which is longer at every level.
    "qido-orthanc-extra": "Orthanc adds its main DICOM tags (e.g. InstanceCreationDate, ImageType); AHI "
    "returns the PS3.18 10.6.3-3 set (dicomweb-search-studies/-series/-instances)",
    # WADO metadata: AHI's stored transfer syntax is named in AvailableTransferSyntaxUID.
    "00083002": "AvailableTransferSyntaxUID: HTJ2K / original lossy syntax as stored (dicomweb-retrieve)",
}
#: QIDO: attributes only one side returns, per level. ahi-local returns StudyDescription (a search key of
#: SearchDICOMStudies in the AHI guide); Orthanc adds Specific Character Set everywhere and repeats the
#: study's (and series') attributes in lower-level results, which AHI's hierarchical search puts in the URL.
QIDO_ONLY_AHI = {"study": {"00081030"}, "series": set(), "instance": set()}
QIDO_ONLY_ORTHANC = {
    "study": {"00080005"},
    "series": {"00080005", "00080020", "00080030", "00080050", "00080090", "00100010", "00100020", "00100030",
               "00100040", "00200010"},
    "instance": {"00080005", "00080020", "00080030", "00080050", "00080060", "00080090", "0008103E",
                 "00100010", "00100020", "00100030", "00100040", "00200010", "00200011", "00400244",
                 "00400245"},
}  # fmt: skip
#: QIDO attributes compared by value wherever both services return them.
QIDO_STUDY = ["0020000D", "00100020", "00100010", "00080020", "00080050", "00200010", "00201206", "00201208"]
QIDO_SERIES = ["0020000E", "00080060", "00200011", "00201209"]
QIDO_INSTANCE = ["00080018", "00080016", "00200013", "00280010", "00280011"]


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("dicomweb-corpus")
    phantom = generate_phantom(7, shape=(6, 48, 48), spacing=(3.0, 2.0, 2.0))
    paths = list(write_dicom_series(phantom, work / "phantom"))
    for name, spec in {
        "rgb": SeriesSpec(
            slices=2,
            rows=24,
            columns=20,
            bits_allocated=8,
            bits_stored=8,
            signed=False,
            photometric="RGB",
            modality="XC",
            patient_id="SYN-RGB",
            seed=1,
        ),
        "multiframe": SeriesSpec(
            slices=4, rows=32, columns=32, multiframe=True, modality="MR", patient_id="SYN-MF", seed=2
        ),
    }.items():
        paths += write_series(work / name, spec).paths
    testdata, left_out = reference_corpus()
    paths = [Path(p) for p in paths] + testdata
    return {"paths": paths, "datasets": {p: _read(p) for p in paths}, "left_out": left_out}


@pytest.fixture(scope="module")
def services(ahi_local: str, orthanc: str, corpus: dict[str, Any]) -> dict[str, Any]:
    datastore_id = create_datastore(ahi_client(ahi_local), "dicomweb-conformance")
    ahi = DICOMwebClient(f"{ahi_local}/datastore/{datastore_id}")
    ref = DICOMwebClient(orthanc)
    datasets = list(corpus["datasets"].values())
    responses = {"ahi": ahi.store_instances(datasets), "orthanc": ref.store_instances(datasets)}
    return {"ahi": ahi, "orthanc": ref, "stow": responses, "datastore_id": datastore_id}


def _uids(results: list[dict[str, Any]], tag: str) -> list[str]:
    return sorted(r[tag]["Value"][0] for r in results)


def _value(entry: dict[str, Any] | None) -> Any:
    if not entry or "Value" not in entry:
        return None
    out = []
    for v in entry["Value"]:
        if isinstance(v, dict) and "Alphabetic" in v:
            v = v["Alphabetic"]
        if isinstance(v, str) and entry.get("vr") in ("DS", "IS"):
            v = float(v)
        out.append(v)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return _same_json(a, b) == []
    return a == b or (a in (None, "") and b in (None, ""))


def _same_json(a: dict[str, Any], b: dict[str, Any], where: str = "") -> list[str]:
    """Tags whose values differ between two DICOM JSON objects (tags only one side has are not compared)."""
    diffs = []
    for tag in sorted(set(a) & set(b)):
        x, y = a[tag], b[tag]
        if "BulkDataURI" in x or "BulkDataURI" in y or "InlineBinary" in x or "InlineBinary" in y:
            continue
        if x.get("vr") == "SQ" and y.get("vr") == "SQ":
            xs, ys = x.get("Value", []), y.get("Value", [])
            if len(xs) != len(ys):
                diffs.append(f"{where}{tag}: {len(xs)} vs {len(ys)} items")
            for n, (i, j) in enumerate(zip(xs, ys, strict=False)):
                diffs += _same_json(i, j, f"{where}{tag}[{n}].")
            continue
        if not _same(_value(x), _value(y)):
            diffs.append(f"{where}{tag}: ahi-local {x.get('Value')!r} vs Orthanc {y.get('Value')!r}")
    return diffs


def _each_series(corpus: dict[str, Any]) -> Iterator[tuple[str, str]]:
    seen = dict.fromkeys(
        (str(d.StudyInstanceUID), str(d.SeriesInstanceUID)) for d in corpus["datasets"].values()
    )
    yield from seen


def test_corpus_is_broad(corpus: dict[str, Any]) -> None:
    syntaxes = {str(d.file_meta.TransferSyntaxUID) for d in corpus["datasets"].values()}
    assert len(corpus["paths"]) >= 20 and len(syntaxes) >= 4, (syntaxes, corpus["left_out"])


def test_stow_responses_agree(services: dict[str, Any], corpus: dict[str, Any]) -> None:
    ahi, ref = services["stow"]["ahi"], services["stow"]["orthanc"]
    expected = sorted(str(d.SOPInstanceUID) for d in corpus["datasets"].values())
    for name, response in (("ahi-local", ahi), ("Orthanc", ref)):
        failed = [
            (str(i.ReferencedSOPInstanceUID), i.FailureReason) for i in response.get("FailedSOPSequence", [])
        ]
        assert failed == [], f"{name} rejected {failed}"
        assert sorted(str(i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence) == expected
    classes = {
        str(i.ReferencedSOPInstanceUID): str(i.ReferencedSOPClassUID) for i in ahi.ReferencedSOPSequence
    }
    assert classes == {
        str(i.ReferencedSOPInstanceUID): str(i.ReferencedSOPClassUID) for i in ref.ReferencedSOPSequence
    }
    for item in ahi.ReferencedSOPSequence:
        assert "imageSetId=" in item.RetrieveURL, item


def _compare_qido(a: list[dict], b: list[dict], key: str, tags: list[str], level: str) -> None:
    assert _uids(a, key) == _uids(b, key)
    by_uid = {r[key]["Value"][0]: r for r in b}
    for row in a:
        other = by_uid[row[key]["Value"][0]]
        assert set(row) - set(other) <= QIDO_ONLY_AHI[level], (level, set(row) - set(other))
        assert set(other) - set(row) <= QIDO_ONLY_ORTHANC[level], (level, set(other) - set(row))
        both = {t: row[t] for t in tags if t in row and t in other}
        assert _same_json(both, {t: other[t] for t in both}) == [], row[key]
        missing = [t for t in tags if t in other and t not in row]
        assert missing == [], f"ahi-local does not return {missing} that Orthanc returns"


def test_qido_studies(services: dict[str, Any], corpus: dict[str, Any]) -> None:
    ahi, ref = services["ahi"], services["orthanc"]
    _compare_qido(ahi.search_for_studies(), ref.search_for_studies(), "0020000D", QIDO_STUDY, "study")
    first = next(iter(corpus["datasets"].values()))
    queries = [
        {"PatientID": str(first.PatientID)},
        {
            "StudyInstanceUID": ",".join(
                sorted({str(d.StudyInstanceUID) for d in corpus["datasets"].values()})[:2]
            )
        },
        {"StudyDate": "19000101-20991231"},
        {"StudyDate": "-19991231"},
        {"ModalitiesInStudy": "CT"},
        {"PatientName": "*"},
        {"AccessionNumber": "ACC*"},
    ]
    # Plain URLs: dicomweb-client 0.61 and requests percent-encode "*" (%2A), which Orthanc 1.10 then
    # matches literally instead of as a wildcard.
    for query in queries:
        text = "&".join(f"{k}={v}" for k, v in query.items())
        mine = requests.get(f"{ahi.base_url}/studies?{text}", timeout=30)
        theirs = requests.get(f"{ref.base_url}/studies?{text}", timeout=30)
        assert mine.status_code == theirs.status_code == 200, (query, mine.text)
        assert _uids(mine.json(), "0020000D") == _uids(theirs.json(), "0020000D"), query


def test_qido_paging(services: dict[str, Any]) -> None:
    ahi, ref = services["ahi"], services["orthanc"]
    total = len(ref.search_for_studies())
    assert len(ahi.search_for_studies()) == total >= 4
    for svc in (ahi, ref):
        pages = [svc.search_for_studies(limit=2, offset=o) for o in range(0, total, 2)]
        assert [len(p) for p in pages] == [min(2, total - o) for o in range(0, total, 2)]
        assert sorted(u for p in pages for u in _uids(p, "0020000D")) == _uids(
            svc.search_for_studies(), "0020000D"
        )
    assert ahi.search_for_studies(offset=total) == ref.search_for_studies(offset=total) == []


def test_qido_series_and_instances(services: dict[str, Any], corpus: dict[str, Any]) -> None:
    ahi, ref = services["ahi"], services["orthanc"]
    for study, series in _each_series(corpus):
        _compare_qido(
            ahi.search_for_series(study), ref.search_for_series(study), "0020000E", QIDO_SERIES, "series"
        )
        _compare_qido(
            ahi.search_for_instances(study, series),
            ref.search_for_instances(study, series),
            "00080018",
            QIDO_INSTANCE,
            "instance",
        )
        modality = _uids(
            ref.search_for_series(study, search_filters={"SeriesInstanceUID": series}), "0020000E"
        )
        assert (
            _uids(ahi.search_for_series(study, search_filters={"SeriesInstanceUID": series}), "0020000E")
            == modality
        )


def _original_json(ds: pydicom.Dataset) -> dict[str, Any]:
    return ds.to_json_dict(bulk_data_threshold=1 << 62, suppress_invalid_tags=True)


def test_wado_metadata(services: dict[str, Any], corpus: dict[str, Any]) -> None:
    """Every attribute both return must agree; where they do not, ahi-local must equal the original file
    (pydicom's DICOM JSON of it is the oracle) and the difference is Orthanc's (e.g. it drops empty sequence
    items). Attributes only one side returns must be deliberate (:data:`DELIBERATE`)."""
    ahi, ref = services["ahi"], services["orthanc"]
    originals = {str(d.SOPInstanceUID): d for d in corpus["datasets"].values()}
    problems, orthanc_quirks = [], []
    for study, series in _each_series(corpus):
        mine = {m["00080018"]["Value"][0]: m for m in ahi.retrieve_series_metadata(study, series)}
        theirs = {m["00080018"]["Value"][0]: m for m in ref.retrieve_series_metadata(study, series)}
        assert sorted(mine) == sorted(theirs)
        for sop, meta in mine.items():
            original = _original_json(originals[sop])
            for diff in _same_json(meta, theirs[sop]):
                tag = diff.split(":")[0].split("[")[0].split(".")[0]
                if _same_json({tag: meta[tag]}, {tag: original[tag]}) == [] and tag in original:
                    orthanc_quirks.append(f"{sop} {diff}")
                else:
                    problems.append(f"{sop} {diff}")
            only_theirs = sorted(t for t in set(theirs[sop]) - set(meta) if not t.startswith("0002"))
            only_mine = set(meta) - set(theirs[sop]) - set(DELIBERATE)
            if originals[sop].file_meta.TransferSyntaxUID.is_compressed:
                only_mine -= {"7FE00010"}  # Orthanc 1.10 lists no BulkDataURI for encapsulated pixel data
            if only_theirs or only_mine:
                problems.append(f"{sop}: only Orthanc {only_theirs}, only ahi-local {sorted(only_mine)}")
    assert problems == [], "\n".join(problems)
    logger.info("Orthanc differs from the original file (ahi-local does not): %s", orthanc_quirks)


def _reference_pixels(
    ref: DICOMwebClient, uids: tuple[str, str, str], original: pydicom.Dataset
) -> np.ndarray:
    """Orthanc's uncompressed instance, or (Orthanc 1.10 cannot transcode JPEG 2000) pydicom's decode of
    the original file."""
    try:
        return ref.retrieve_instance(*uids, media_types=(("application/dicom", ELE),)).pixel_array
    except requests.HTTPError:
        return original.pixel_array


def _pixels(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array


def test_wado_instances_decode_to_equal_pixels(services: dict[str, Any], corpus: dict[str, Any]) -> None:
    ahi, ref = services["ahi"], services["orthanc"]
    for path, original in corpus["datasets"].items():
        uids = (str(original.StudyInstanceUID), str(original.SeriesInstanceUID), str(original.SOPInstanceUID))
        mine = ahi.retrieve_instance(*uids, media_types=(("application/dicom", ELE),))
        assert str(mine.file_meta.TransferSyntaxUID) == ELE
        if "PixelData" not in original:
            assert "PixelData" not in mine
            continue
        a, b = _pixels(mine), _reference_pixels(ref, uids, original)
        assert a.shape == b.shape, path.name
        if str(original.file_meta.TransferSyntaxUID) in LOSSY:
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 2, path.name  # two JPEG decoders
        else:
            assert np.array_equal(a, b), path.name


def test_wado_frames_equal_bytes(services: dict[str, Any], corpus: dict[str, Any]) -> None:
    ahi, ref = services["ahi"], services["orthanc"]
    for path, original in corpus["datasets"].items():
        if "PixelData" not in original:
            continue
        uids = (str(original.StudyInstanceUID), str(original.SeriesInstanceUID), str(original.SOPInstanceUID))
        count = int(original.get("NumberOfFrames", 1) or 1)
        numbers = list(range(1, count + 1))
        media = (("application/octet-stream", ELE),)
        mine = ahi.retrieve_instance_frames(*uids, frame_numbers=numbers, media_types=media)
        assert len(mine) == count, path.name
        if not original.file_meta.TransferSyntaxUID.is_compressed:
            theirs = ref.retrieve_instance_frames(*uids, frame_numbers=numbers, media_types=media)
            assert [bytes(f) for f in mine] == [bytes(f) for f in theirs], path.name
            continue
        # Orthanc 1.10 does not transcode compressed frames to native: pydicom's decode of the original is
        # the reference (as it is for ahi-local's import check).
        for frame, want in zip(mine, original.pixel_array.reshape(count, -1), strict=True):
            got = np.frombuffer(bytes(frame), dtype=want.dtype.newbyteorder("<"))[: want.size]
            if str(original.file_meta.TransferSyntaxUID) in LOSSY:
                assert got.size == want.size and np.abs(got.astype(int) - want.astype(int)).max() <= 2, (
                    path.name
                )
            else:
                assert np.array_equal(got, want), path.name


def test_stow_study_mismatch_is_a_conflict(services: dict[str, Any], corpus: dict[str, Any]) -> None:
    """StoreDICOMStudy with an instance of another study: nothing stored, the instance listed as failed."""
    ds = next(iter(corpus["datasets"].values()))
    body = Path(ds.filename).read_bytes()
    boundary = "conformance-boundary"
    payload = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    answers = {}
    for name, svc in (("ahi", services["ahi"]), ("orthanc", services["orthanc"])):
        r = requests.post(
            f"{svc.base_url}/studies/1.2.3.4.5.6.7.8.9", data=payload, headers=headers, timeout=60
        )
        answers[name] = (r.status_code, r.json() if r.content else None)
    for status, answer in answers.values():
        assert status == 409, answers
        failed = answer["00081198"]["Value"]
        assert [f["00081155"]["Value"][0] for f in failed] == [str(ds.SOPInstanceUID)]
        assert [f["00081197"]["Value"][0] for f in failed] == [0x0110]  # Processing failure
        assert not answer.get("00081199", {}).get("Value")

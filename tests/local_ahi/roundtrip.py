"""Shared checks for import round trips: an imported file must come back attribute- and pixel-exact."""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from devstack.importing import ImportResult, create_datastore, import_folder
from tests.support.ahi_metadata import instance_datasets, read_metadata
from tests.support.pixels import crc32_of, decode_served, original_fragments, reference_frames

PIXEL_KEYWORDS = {"PixelData", "FloatPixelData", "DoubleFloatPixelData"}
KEPT_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.91": "image/j2c",
}


@dataclasses.dataclass(frozen=True)
class Expectation:
    path: Path
    importable: bool
    reason: str
    sop_uid: str | None


def expect(path: Path) -> Expectation:
    """Whether the service must import ``path``, judged with pydicom alone (the oracle)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:
            return Expectation(path, False, f"pydicom cannot read: {exc}", None)
        sop = str(ds.get("SOPInstanceUID", "") or "").strip() or None
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            if not str(ds.get(keyword, "") or "").strip():
                return Expectation(path, False, f"no {keyword}", sop)
        if any(k in ds for k in PIXEL_KEYWORDS):
            try:
                reference_frames(path)
            except Exception as exc:
                return Expectation(path, False, f"pydicom cannot decode pixels: {exc}", sop)
    return Expectation(path, True, "", sop)


def rounds_without_duplicate_sops(expectations: list[Expectation]) -> list[list[Expectation]]:
    """Split files into rounds so that no SOP Instance UID repeats within one import (one datastore)."""
    seen: dict[str | None, int] = defaultdict(int)
    rounds: list[list[Expectation]] = []
    for exp in expectations:
        index = seen[exp.sop_uid] if exp.sop_uid else 0
        if exp.sop_uid:
            seen[exp.sop_uid] += 1
        while len(rounds) <= index:
            rounds.append([])
        rounds[index].append(exp)
    return rounds


def stage(files: list[Path], folder: Path) -> dict[str, Path]:
    """Copy files under unique names into ``folder``; return {name: original path}."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for i, path in enumerate(files):
        name = f"{i:04d}_{path.name}"
        (folder / name).write_bytes(path.read_bytes())
        names[name] = path
    return names


@dataclasses.dataclass
class ImportedFile:
    datastore_id: str
    image_set_id: str | None
    failure: dict[str, Any] | None


def import_files(
    ahi: Any, s3: Any, datastore_id: str, files: list[Path], folder: Path
) -> tuple[ImportResult, dict[Path, ImportedFile]]:
    names = stage(files, folder)
    result = import_folder(ahi, s3, datastore_id, folder)
    by_path: dict[Path, ImportedFile] = {}
    for line in result.success:
        name = line["inputFile"].rsplit("/", 1)[-1]
        by_path[names[name]] = ImportedFile(datastore_id, line["importResponse"]["imageSetId"], None)
    for line in result.failure:
        name = line["inputFile"].rsplit("/", 1)[-1]
        by_path[names[name]] = ImportedFile(datastore_id, None, line)
    return result, by_path


@dataclasses.dataclass
class ImportedCorpus:
    """Files imported in rounds (one datastore and one import job each, no SOP Instance UID twice in one)."""

    expectations: dict[Path, Expectation]
    results: list[ImportResult]
    files: dict[Path, ImportedFile]


def import_corpus(
    ahi: Any, s3: Any, files: list[Path], workdir: Path, name: str = "corpus"
) -> ImportedCorpus:
    """Judge every file with pydicom (:func:`expect`), then import them all: one import per round of
    :func:`rounds_without_duplicate_sops`."""
    expectations = {p: expect(p) for p in files}
    results: list[ImportResult] = []
    by_path: dict[Path, ImportedFile] = {}
    for number, batch in enumerate(rounds_without_duplicate_sops(list(expectations.values()))):
        datastore_id = create_datastore(ahi, f"{name}-{number}")
        result, imported = import_files(
            ahi, s3, datastore_id, [e.path for e in batch], workdir / f"{name}-{number}"
        )
        results.append(result)
        by_path.update(imported)
    return ImportedCorpus(expectations, results, by_path)


class MetadataCache:
    def __init__(self, ahi: Any) -> None:
        self.ahi = ahi
        self._docs: dict[tuple[str, str], dict[str, Any]] = {}

    def instances(self, datastore_id: str, image_set_id: str) -> dict[str, Any]:
        key = (datastore_id, image_set_id)
        if key not in self._docs:
            self._docs[key] = instance_datasets(read_metadata(self.ahi, datastore_id, image_set_id))
        return self._docs[key]


def assert_datasets_equal(original: pydicom.Dataset, restored: pydicom.Dataset, where: str) -> None:
    """Every attribute of ``original`` (top-level pixel data aside) has the same value in ``restored``;
    sequences are compared item by item, element by element."""
    for elem in original:
        if elem.keyword in PIXEL_KEYWORDS and where.count("/") == 0:
            continue
        name = f"{where} {elem.tag} {elem.keyword or elem.name}"
        assert elem.tag in restored, f"{name} missing from metadata"
        got = restored[elem.tag].value
        if elem.VR == "SQ":
            assert len(got) == len(elem.value), f"{name}: {len(got)} items != {len(elem.value)}"
            for i, (item, other) in enumerate(zip(elem.value, got, strict=True)):
                assert_datasets_equal(item, other, f"{name}/{i}")
            continue
        assert got == elem.value or (not got and not elem.value), (
            f"{name}: metadata {got!r} != file {elem.value!r}"
        )


def assert_attributes_equal(original: pydicom.Dataset, restored: pydicom.Dataset, where: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_datasets_equal(original, restored, where)


def fetch_frame(ahi: Any, datastore_id: str, image_set_id: str, frame_id: str) -> tuple[bytes, str]:
    resp = ahi.get_image_frame(
        datastoreId=datastore_id, imageSetId=image_set_id, imageFrameInformation={"imageFrameId": frame_id}
    )
    return resp["imageFrameBlob"].read(), resp["contentType"]


def assert_frames_equal(
    ahi: Any, datastore_id: str, image_set_id: str, inst: dict[str, Any], path: Path
) -> None:
    """Every frame served for ``inst`` equals the original file's frame, pixel for pixel."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    if not any(k in ds for k in PIXEL_KEYWORDS):
        assert inst.get("ImageFrames", []) == [], f"{path.name}: frames listed for an instance without pixels"
        return
    expected = reference_frames(path)
    frames = inst["ImageFrames"]
    assert len(frames) == len(expected), f"{path.name}: {len(frames)} frames served, file has {len(expected)}"
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    fragments = original_fragments(path) if syntax in KEPT_SYNTAXES else None
    for index, (frame, reference) in enumerate(zip(frames, expected, strict=True)):
        data, content_type = fetch_frame(ahi, datastore_id, image_set_id, frame["ID"])
        where = f"{path.name} frame {index} ({frame['ID']})"
        checksum = frame["PixelDataChecksumFromBaseToFullResolution"][0]
        assert (checksum["Width"], checksum["Height"]) == (reference.shape[1], reference.shape[0]), where
        if fragments is not None:
            assert content_type == KEPT_SYNTAXES[syntax], where
            assert data == fragments[index], f"{where}: lossy frame bytes were not kept as imported"
            assert checksum["Checksum"] == crc32_of(reference), f"{where}: checksum of decoded pixels"
            continue
        decoded = decode_served(data, content_type, reference)
        assert decoded.shape == reference.shape, f"{where}: shape {decoded.shape} != {reference.shape}"
        assert np.array_equal(decoded, reference), (
            f"{where}: pixels differ (max {np.abs(decoded - reference).max()})"
        )
        assert checksum["Checksum"] == crc32_of(decoded), f"{where}: CRC32 in metadata does not match pixels"
        assert frame["MinPixelValue"] == reference.min() and frame["MaxPixelValue"] == reference.max(), where


def assert_round_trip(ahi: Any, cache: MetadataCache, imported: ImportedFile, path: Path) -> None:
    assert imported.image_set_id, f"{path.name} was not imported: {imported.failure}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = pydicom.dcmread(path)
    instances = cache.instances(imported.datastore_id, imported.image_set_id)
    sop = str(original.SOPInstanceUID)
    assert sop in instances, f"{path.name}: SOP instance {sop} not in image set {imported.image_set_id}"
    restored, inst = instances[sop]
    assert_attributes_equal(original, restored, path.name)
    assert_frames_equal(ahi, imported.datastore_id, imported.image_set_id, inst, path)

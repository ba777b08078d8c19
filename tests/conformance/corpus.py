"""The conformance corpus: import DICOM files into ahi-local, export every image set with the connector, and
compare every instance with its original file.

Per instance the export must give: every element of the original (VR and value, recursively through
sequence items, private elements included; the file meta group and the top-level pixel data aside), pixels
equal to pydicom's decode of the original (``pixel_array``, colour converted as pydicom converts it; for lossy
frames pydicom rejects, imagecodecs' decode), and a dataset that ``save_as`` writes and ``dcmread`` reads back
unchanged. Photometric Interpretation and Planar Configuration may differ only as the native pixels require
(the pixel comparison, after pydicom's own colour conversion, proves them right).

:func:`run_corpus` imports and checks, giving one :class:`Outcome` per file (:func:`check_corpus` checks an
import made before); :func:`table` renders the summary the test prints. Run
``python -m tests.conformance.corpus`` for the table on the whole corpus without pytest.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import math
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from tests.local_ahi.roundtrip import Expectation, ImportedCorpus, import_corpus
from tests.support.pixels import FALLBACK, original_fragments

log = logging.getLogger(__name__)

PIXEL_KEYWORDS = frozenset({"PixelData", "FloatPixelData", "DoubleFloatPixelData"})
# Attributes the export rewrites for native pixel data; their correctness is proven by the pixel check.
PIXEL_FORM = frozenset({0x00280004, 0x00280006})


def _ignored(tag: int, top: bool) -> bool:
    """File meta, top-level pixel data and pixel form (checked through the pixels), and Group Length
    (gggg,0000): retired, a property of one encoding that neither the export nor pydicom's writer keeps."""
    if tag & 0xFFFF == 0:
        return True
    return top and (tag >> 16 == 0x0002 or tag in PIXEL_FORM or tag in (0x7FE00010, 0x7FE00008, 0x7FE00009))


TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)


@dataclasses.dataclass
class Outcome:
    path: Path
    status: str  # "exact", "rejected", "rejected-expected", "differs", "export-error"
    detail: str = ""
    instances: int = 0


def _norm(vr: str, value: Any) -> Any:
    """A value in a form where equality means 'the same DICOM value' (DS/IS by their original strings)."""
    if isinstance(value, (list, MultiValue, tuple)):
        items = [_norm(vr, v) for v in value]
        if not items:
            return None
        return items[0] if len(items) == 1 else items
    if value is None or value == "" or value == b"":
        return None
    if vr in ("DS", "IS"):
        original = getattr(value, "original_string", None)
        return (original if original is not None else str(value)).strip()
    if vr in TEXT_VRS:
        return str(value).rstrip(" \x00") if vr != "UI" else str(value).rstrip("\x00")
    if vr in ("FL", "FD") and isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
        return data + b"\0" if len(data) % 2 else data  # written padded to even length
    return value


def compare(original: Dataset, other: Dataset, where: str = "", top: bool = True) -> list[str]:
    """Differences between two datasets, element by element, recursively (empty list when equal)."""
    diffs: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for elem in original:
            if _ignored(elem.tag, top):
                continue
            name = f"{where}({elem.tag >> 16:04X},{elem.tag & 0xFFFF:04X})"
            if elem.tag not in other:
                diffs.append(f"{name} {elem.VR} missing")
                continue
            got = other[elem.tag]
            if got.VR != elem.VR:
                diffs.append(f"{name} VR {elem.VR} -> {got.VR} ({got.value!r:.60})")
                continue
            if elem.VR == "SQ":
                if len(got.value) != len(elem.value):
                    diffs.append(f"{name}: {len(elem.value)} items -> {len(got.value)}")
                    continue
                for i, (a, b) in enumerate(zip(elem.value, got.value, strict=True)):
                    diffs += compare(a, b, f"{name}[{i}]/", top=False)
                continue
            a, b = _norm(elem.VR, elem.value), _norm(got.VR, got.value)
            if a != b:
                diffs.append(f"{name} {elem.VR}: {a!r:.80} -> {b!r:.80}")
        for elem in other:
            if _ignored(elem.tag, top):
                continue
            if elem.tag not in original and elem.tag not in (0x00080016, 0x00080018, 0x0020000E):
                diffs.append(f"{where}({elem.tag >> 16:04X},{elem.tag & 0xFFFF:04X}) {elem.VR} added")
    return diffs


def reference_pixels(path: Path) -> np.ndarray | None:
    """The original's pixels as pydicom's ``pixel_array`` gives them, or imagecodecs' decode of the kept
    lossy frames where pydicom rejects the stream (None without pixel data)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        if not any(k in ds for k in PIXEL_KEYWORDS):
            return None
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = (
                pydicom.uid.ImplicitVRLittleEndian
                if ds.original_encoding[0]
                else pydicom.uid.ExplicitVRLittleEndian
            )
        try:
            return np.asarray(ds.pixel_array)
        except Exception:
            syntax = str(ds.file_meta.TransferSyntaxUID)
            if syntax not in FALLBACK:
                raise
            frames = [np.asarray(FALLBACK[syntax](f)) for f in original_fragments(path)]
            arr = np.stack(frames) if len(frames) > 1 else frames[0]
            return arr


def check_instance(path: Path, exported: Dataset) -> list[str]:
    """Every difference between ``exported`` and the file at ``path`` (attributes, pixels, re-read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = pydicom.dcmread(path)
        diffs = compare(original, exported)
        expected = reference_pixels(path)
        if expected is not None:
            try:
                got = np.asarray(exported.pixel_array)
            except Exception as exc:
                return diffs + [f"exported pixel_array fails: {type(exc).__name__}: {exc}"]
            if got.shape != expected.shape:
                diffs.append(f"pixels shape {expected.shape} -> {got.shape}")
            elif not np.array_equal(got, expected, equal_nan=got.dtype.kind == "f"):
                diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
                diffs.append(f"pixels differ at {int(np.count_nonzero(diff))} samples (max {diff.max()})")
        buffer = io.BytesIO()
        try:
            exported.save_as(buffer, enforce_file_format=True)
            again = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
        except Exception as exc:
            return diffs + [f"save_as / dcmread fails: {type(exc).__name__}: {exc}"]
        diffs += [f"after save_as: {d}" for d in compare(exported, again)]
        if expected is not None and not diffs:
            if np.asarray(again.pixel_array).tobytes() != np.asarray(exported.pixel_array).tobytes():
                diffs.append("pixels differ after save_as / dcmread")
    return diffs


def run_corpus(
    ahi: Any, s3: Any, files: Iterable[Path], workdir: Path, name: str = "corpus"
) -> list[Outcome]:
    """Import ``files`` (:func:`~tests.local_ahi.roundtrip.import_corpus`) and check every export
    (:func:`check_corpus`)."""
    return check_corpus(ahi, import_corpus(ahi, s3, list(files), workdir, name))


def check_corpus(ahi: Any, corpus: ImportedCorpus) -> list[Outcome]:
    """Export every image set of ``corpus`` with ``ImageSetExporter.to_datasets`` and the ``AHItoDICOM``
    drop-in, and check every instance against its original file; one :class:`Outcome` per file."""
    from ahi_connector import ImageSetExporter
    from ahi_connector.compat import AHItoDICOM

    outcomes: dict[Path, Outcome] = {}
    image_sets: dict[tuple[str, str], list[Path]] = {}
    for path, imported in corpus.files.items():
        exp = corpus.expectations[path]
        if imported.image_set_id is not None:
            image_sets.setdefault((imported.datastore_id, imported.image_set_id), []).append(path)
            continue
        reason = (imported.failure or {}).get("exception", {}).get("message", "")
        if exp.importable:
            outcomes[path] = Outcome(path, "rejected", reason)
        else:
            outcomes[path] = Outcome(path, "rejected-expected", f"{exp.reason} | {reason}")
    with (
        ImageSetExporter(ahi, max_workers=8) as exporter,
        AHItoDICOM(client=ahi, fetcher_process_count=8) as compat,
    ):
        for (datastore_id, image_set_id), paths in image_sets.items():
            _check_image_set(
                exporter, compat, datastore_id, image_set_id, paths, corpus.expectations, outcomes
            )
    return [outcomes[p] for p in sorted(outcomes)]


def _check_image_set(
    exporter: Any,
    compat: Any,
    datastore_id: str,
    image_set_id: str,
    paths: list[Path],
    by_exp: dict[Path, Expectation],
    outcomes: dict[Path, Outcome],
) -> None:
    try:
        strict_metadata(exporter.client, datastore_id, image_set_id)
        datasets = exporter.to_datasets(datastore_id, image_set_id)
        dropin = compat.DICOMizeImageSet(datastore_id, image_set_id)
    except Exception as exc:
        for path in paths:
            outcomes[path] = Outcome(path, "export-error", f"{type(exc).__name__}: {exc}"[:400])
        return
    by_sop = {str(ds.SOPInstanceUID): ds for ds in datasets}
    dropin_by_sop = {str(ds.SOPInstanceUID): ds for ds in dropin}
    for path in paths:
        sop = by_exp[path].sop_uid
        exported = by_sop.get(sop or "")
        if exported is None:
            outcomes[path] = Outcome(path, "differs", f"SOP {sop} not exported from {image_set_id}")
            continue
        diffs = check_instance(path, exported)
        other = dropin_by_sop.get(sop or "")
        if other is None:
            diffs.append("AHItoDICOM.DICOMizeImageSet did not return the instance")
        else:
            diffs += [f"AHItoDICOM: {d}" for d in compare(exported, other)]
            if "PixelData" in exported and other.get("PixelData") != exported.PixelData:
                diffs.append("AHItoDICOM: pixel data differs from to_datasets")
        outcomes[path] = Outcome(path, "differs" if diffs else "exact", "; ".join(diffs[:6]), 1)


def _reject_constant(token: str) -> None:
    raise ValueError(f"bare {token} token: not JSON (RFC 8259)")


def strict_metadata(ahi: Any, datastore_id: str, image_set_id: str) -> dict[str, Any]:
    """GetImageSetMetadata parsed by a strict JSON parser (no bare NaN / Infinity tokens)."""
    resp = ahi.get_image_set_metadata(datastoreId=datastore_id, imageSetId=image_set_id)
    return json.loads(gzip.decompress(resp["imageSetMetadataBlob"].read()), parse_constant=_reject_constant)


def table(outcomes: list[Outcome]) -> str:
    """The summary table (Markdown): counts, then one line per rejected or differing file."""
    count = {
        s: sum(1 for o in outcomes if o.status == s)
        for s in ("exact", "rejected", "rejected-expected", "differs", "export-error")
    }
    imported = count["exact"] + count["differs"] + count["export-error"]
    lines = [
        "| files | imported | rejected at import | exported exactly | differences / export errors |",
        "|---:|---:|---:|---:|---:|",
        f"| {len(outcomes)} | {imported} | {count['rejected'] + count['rejected-expected']} | "
        f"{count['exact']} | "
        f"{count['differs'] + count['export-error']} |",
        "",
    ]
    for o in outcomes:
        if o.status != "exact":
            lines.append(f"- {o.status}: `{o.path.name}`: {o.detail[:300]}")
    return "\n".join(lines)


def corpus_files() -> list[Path]:
    """Every DICOM test file of pydicom and pydicom-data."""
    from pydicom.data import get_testdata_files

    return sorted({Path(p) for p in get_testdata_files() if Path(p).is_file()})


def main() -> None:  # pragma: no cover - manual survey
    import sys

    from devstack.clients import ahi_client, s3_client
    from devstack.processes import ahi_local_server, moto_s3_server
    from tests.conformance.edge_cases import write_cases

    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, moto_s3_server() as s3_url:
        files = corpus_files() + write_cases(Path(tmp) / "edge")
        if len(sys.argv) > 1:
            files = [f for f in files if any(s in f.name for s in sys.argv[1:])]
        with ahi_local_server(Path(tmp) / "data", s3_endpoint_url=s3_url) as url:
            outcomes = run_corpus(ahi_client(url), s3_client(s3_url), files, Path(tmp) / "work")
    print(table(outcomes))


if __name__ == "__main__":
    main()

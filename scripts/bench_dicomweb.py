"""Write-back latency: STOW-RS (StoreDICOM) vs S3 upload + StartDICOMImportJob + wait, same SEG, same run.

Starts moto S3 and ahi-local on 127.0.0.1, imports a phantom CT series, builds a binary SEG of it with
highdicom, then writes that SEG back ``--rounds`` times each way (a new SOP/series UID per round) and prints
median / max seconds and the ratio. Both paths end when the SEG is visible in an image set.

Usage: ``python scripts/bench_dicomweb.py [--rounds 5]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import generate_uid

from ahi_connector.dicomweb import require_stored
from devstack.clients import ahi_client, dicomweb_client, s3_client
from devstack.importing import create_datastore, import_folder
from devstack.processes import ahi_local_server, moto_s3_server
from model.phantoms import generate_phantom, write_dicom_series


def _seg(sources: list[pydicom.Dataset]) -> hd.seg.Segmentation:
    mask = np.zeros((len(sources), sources[0].Rows, sources[0].Columns), dtype=bool)
    mask[:, 10:30, 10:30] = True
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="spleen",
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical structure"),
        segmented_property_type=hd.sr.CodedConcept("78961009", "SCT", "Spleen"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    return hd.seg.Segmentation(
        sources, mask, hd.seg.SegmentationTypeValues.BINARY, [segment], generate_uid(), 1, generate_uid(), 1,
        "bench", "bench", "1", "0",
    )  # fmt: skip


def _bytes(seg: pydicom.Dataset) -> bytes:
    seg.SeriesInstanceUID, seg.SOPInstanceUID = generate_uid(), generate_uid()
    seg.file_meta.MediaStorageSOPInstanceUID = seg.SOPInstanceUID
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    with moto_s3_server() as s3_url, ahi_local_server(work / "data", s3_endpoint_url=s3_url) as url:
        ahi, s3, web = ahi_client(url), s3_client(s3_url), dicomweb_client(url)
        datastore_id = create_datastore(ahi, "bench-dicomweb")
        paths = write_dicom_series(generate_phantom(3, shape=(24, 96, 96)), work / "ct")
        import_folder(ahi, s3, datastore_id, work / "ct")
        seg = _seg([pydicom.dcmread(path) for path in paths])
        times: dict[str, list[float]] = {"STOW-RS (StoreDICOM)": [], "S3 + import job + wait": []}
        for _ in range(args.rounds):
            body = _bytes(seg)
            started = time.perf_counter()
            require_stored(web.store_instances(datastore_id, [body]), "SEG")
            times["STOW-RS (StoreDICOM)"].append(time.perf_counter() - started)
            folder = work / f"seg-{uuid.uuid4().hex}"
            folder.mkdir()
            (folder / "seg.dcm").write_bytes(_bytes(seg))
            started = time.perf_counter()
            result = import_folder(ahi, s3, datastore_id, folder)
            assert result.job_status == "COMPLETED", result.job_properties
            times["S3 + import job + wait"].append(time.perf_counter() - started)
    print(f"SEG of {len(paths)} frames ({len(body)} bytes), {args.rounds} rounds each")
    print(f"| {'path':<24} | median s | max s |\n|{'-' * 26}|---------:|------:|")
    for name, values in times.items():
        print(f"| {name:<24} | {statistics.median(values):8.3f} | {max(values):5.3f} |")
    stow, job = (statistics.median(v) for v in times.values())
    print(f"import job / STOW-RS median ratio: {job / stow:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

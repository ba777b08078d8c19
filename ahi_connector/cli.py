"""``ahi-export DATASTORE_ID IMAGESET_ID -o DIR [--series UID] [--format dicom|nifti|npz] [--preview]
[--via dicomweb --study UID]``.

``--preview`` also writes ``SERIES_UID.preview.png`` per series: the axial, coronal and sagittal views through
the volume's centre in a soft-tissue window, drawn by :func:`ahi_connector.preview.render_preview` (the
picture the segmentation app makes, without a mask). matplotlib is imported only then, so the connector
itself does not depend on it.

Frames come from GetImageFrame (native API) by default; ``--via dicomweb`` reads the series through WADO-RS
instead (GetDICOMSeriesMetadata + GetDICOMInstanceFrames), for roles that only grant DICOMweb. Its quota is
lower (retrieve 50 tps vs GetImageFrame 1000 tps) and DICOMweb metadata has no frame CRC32, so only sizes and
geometry are checked.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from .client import make_ahi_client
from .decoders import PREFERENCES
from .dicomweb import DicomWebClient, DicomWebSource
from .errors import AHIConfigError, AHIError
from .exporter import ImageSetExporter
from .preview import render_preview
from .volume import Volume
from .writers import write_dicom, write_nifti, write_npz

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ahi-export", description="Export an AWS HealthImaging image set.")
    p.add_argument("datastore_id")
    p.add_argument("image_set_id")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder (created)")
    p.add_argument(
        "--series", help="SeriesInstanceUID (default: all series; required for volumes of multi-series)"
    )
    p.add_argument("--format", choices=("dicom", "nifti", "npz"), default="dicom")
    p.add_argument("--endpoint-url", help="AHI endpoint (default: AWS_ENDPOINT_URL_MEDICAL_IMAGING or AWS)")
    p.add_argument("--region", help="AWS region (default: the boto3 chain)")
    p.add_argument(
        "--via",
        choices=("native", "dicomweb"),
        default="native",
        help="frames from GetImageFrame (default) or DICOMweb WADO-RS (needs --study)",
    )
    p.add_argument("--study", help="StudyInstanceUID of the image set (--via dicomweb)")
    p.add_argument(
        "--dicomweb-endpoint-url",
        help="DICOMweb endpoint (default: AHI_DICOMWEB_ENDPOINT_URL, the AHI endpoint, or AWS's dicom- host)",
    )
    p.add_argument("--decoder", choices=sorted(PREFERENCES), default="auto")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--deadline", type=float, default=600.0, help="overall deadline in seconds")
    p.add_argument(
        "--no-rescale", action="store_true", help="volumes: keep stored values (no slope/intercept)"
    )
    p.add_argument(
        "--preview",
        action="store_true",
        help="also write SERIES_UID.preview.png (axial/coronal/sagittal views; needs matplotlib)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _client(args: argparse.Namespace) -> object:
    if args.via == "native":
        return make_ahi_client(endpoint_url=args.endpoint_url, region_name=args.region)
    if not args.study:
        raise AHIConfigError("--via dicomweb needs --study (DICOMweb paths name the study and series)")
    dicomweb = DicomWebClient(args.dicomweb_endpoint_url or args.endpoint_url, region_name=args.region)
    return DicomWebSource(dicomweb, args.study, [args.series] if args.series else None)


def _require_matplotlib() -> None:
    """A clear error (before any download) when ``--preview`` is asked for without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            f"ahi-export --preview needs matplotlib ({exc}); install it (pip install matplotlib, or "
            "scripts/install.sh) or leave out --preview"
        ) from exc


def _write_preview(vol: Volume, output: Path) -> Path | None:
    """The picture of a rescaled (HU) volume, or None (logged) when the volume is not a 3-D grey stack."""
    if vol.array.ndim != 3:
        log.warning("no preview for series %s: %d-D (colour?) volume", vol.series_uid, vol.array.ndim)
        return None
    caption = [
        f"Series {vol.series_uid}  ({vol.modality or '?'}, {vol.shape[0]} slices)",
        f"Image set {vol.image_set_id}  datastore {vol.datastore_id}",
    ]
    return render_preview(vol.array, vol.affine, output / f"{vol.series_uid}.preview.png", caption=caption)


def run(args: argparse.Namespace) -> list[Path]:
    if args.preview:
        _require_matplotlib()
    client = _client(args)
    args.output.mkdir(parents=True, exist_ok=True)
    with ImageSetExporter(
        client, decoder=args.decoder, max_workers=args.workers, deadline_s=args.deadline
    ) as ex:
        meta = ex.get_metadata(args.datastore_id, args.image_set_id)
        series = meta.get_series(args.series)
        total = sum(s.frame_count for s in series)
        paths: list[Path] = []
        with tqdm(total=total, unit="frame", desc=args.image_set_id[:12], disable=None) as bar:
            if args.format == "dicom":
                datasets = ex.to_datasets(
                    args.datastore_id, args.image_set_id, args.series, progress=bar.update
                )
                paths = write_dicom(datasets, args.output)
            for s in series if args.format != "dicom" else ():
                vol = ex.to_volume(
                    args.datastore_id,
                    args.image_set_id,
                    s.series_uid,
                    rescale=not args.no_rescale,
                    progress=bar.update,
                )
                if args.format == "nifti":
                    paths.append(write_nifti(vol, args.output / f"{s.series_uid}.nii.gz"))
                else:
                    paths.append(write_npz(vol, args.output / f"{s.series_uid}.npz"))
                if args.preview and vol.rescaled:
                    paths.extend(p for p in [_write_preview(vol, args.output)] if p)
        if args.preview and (args.format == "dicom" or args.no_rescale):
            # The DICOM export keeps frames, not volumes (and --no-rescale keeps stored values): fetch each
            # series once more as a volume in HU for its picture.
            for s in series:
                try:
                    vol = ex.to_volume(args.datastore_id, args.image_set_id, s.series_uid, rescale=True)
                except AHIError as exc:
                    log.warning("no preview for series %s: %s", s.series_uid, exc)
                    continue
                paths.extend(p for p in [_write_preview(vol, args.output)] if p)
        return paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    try:
        paths = run(args)
    except AHIError as exc:
        log.error("%s", exc)
        return 2
    log.info("wrote %d file(s) under %s", len(paths), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

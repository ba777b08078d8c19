"""``ahi-export DATASTORE_ID IMAGESET_ID -o DIR [--series UID] [--format dicom|nifti|npz] [--via dicomweb
--study UID]``.

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
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _client(args: argparse.Namespace) -> object:
    if args.via == "native":
        return make_ahi_client(endpoint_url=args.endpoint_url, region_name=args.region)
    if not args.study:
        raise AHIConfigError("--via dicomweb needs --study (DICOMweb paths name the study and series)")
    dicomweb = DicomWebClient(args.dicomweb_endpoint_url or args.endpoint_url, region_name=args.region)
    return DicomWebSource(dicomweb, args.study, [args.series] if args.series else None)


def run(args: argparse.Namespace) -> list[Path]:
    client = _client(args)
    args.output.mkdir(parents=True, exist_ok=True)
    with ImageSetExporter(
        client, decoder=args.decoder, max_workers=args.workers, deadline_s=args.deadline
    ) as ex:
        meta = ex.get_metadata(args.datastore_id, args.image_set_id)
        series = meta.get_series(args.series)
        total = sum(s.frame_count for s in series)
        with tqdm(total=total, unit="frame", desc=args.image_set_id[:12], disable=None) as bar:
            if args.format == "dicom":
                datasets = ex.to_datasets(
                    args.datastore_id, args.image_set_id, args.series, progress=bar.update
                )
                return write_dicom(datasets, args.output)
            paths = []
            for s in series:
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

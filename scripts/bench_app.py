"""Benchmark: per-stage timings of the AISpleenSegApp on a large phantom, through ahi-local and from a DICOM
folder.

    .venv/bin/python scripts/bench_app.py [--slices 300] [--size 512] [--bundle model/spleen_ct_segmentation]

One run: generates (or reuses, ``--cache``) a synthetic abdominal CT phantom (``model.phantoms``, ``--slices``
x ``--size``²), imports it into a fresh ahi-local (HTJ2K) backed by a moto S3 server, builds one
``SpleenSegService`` and runs the same image set request twice (cold = first run in the process, warm =
second), then the same series from its DICOM folder. Stage times come from the run's report (the operators'
compute wall times; holoscan's greedy scheduler runs one operator at a time).

Also in the same run, on the same image set (each trial in its own subprocess with a hard timeout, see
``scripts/bench_connector.py``): the connector's ``to_datasets`` and ``to_volume`` over the lean transport and
over botocore, decoding alone, and the anchor ``ahitodicominterface`` 0.1.3.4 with its defaults
(pip-installed with ``--no-deps`` at bench time only, never a dependency); the ratios against the anchor and
the client CPU per frame excluding decode (the volume trial's CPU minus decode-only's) are printed with the
load average.

Baselines measured in the same run:
- model load: ``torch.jit.load`` of ``models/model.ts`` — what the SDK's bundle operator pays on every run
when the
  AppContext holds no model; the service pays it once.
- volume: the SDK path (connector Datasets, then DICOMSeriesToVolumeOperator) vs the connector's direct
  ``to_volume`` (frames decoded straight into the volume), to judge whether a fast path is worth it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_app")
STAGE_ROWS = (
    "metadata",
    "fetch_decode",
    "select",
    "volume",
    "inference",
    "mask",
    "seg_write",
    "stl",
    "preview",
    "report",
    "total",
)


def _phantom(cache: Path, slices: int, size: int, seed: int) -> tuple[Path, float]:
    """DICOM folder of the phantom (cached) and its true spleen volume (mL)."""
    folder, truth = cache / "ct", cache / "truth.json"
    if truth.is_file() and len(list(folder.glob("*.dcm"))) == slices:
        return folder, float(json.loads(truth.read_text())["spleen_volume_ml"])
    from model.phantoms import generate_phantom, write_dicom_series

    spacing = (300.0 / slices, 400.0 / size, 400.0 / size)  # about 300 mm x 400 mm field of view
    start = time.perf_counter()
    phantom = generate_phantom(seed=seed, shape=(slices, size, size), spacing=spacing)
    write_dicom_series(phantom, folder)
    truth.write_text(json.dumps({"spleen_volume_ml": phantom.spleen_volume_ml, "seed": seed}))
    log.info("phantom %dx%d² generated in %.1f s", slices, size, time.perf_counter() - start)
    return folder, phantom.spleen_volume_ml


def _import(folder: Path, ahi_url: str, s3_url: str) -> tuple[str, str, float]:
    from devstack.clients import ahi_client, s3_client
    from devstack.importing import create_datastore, import_folder

    ahi = ahi_client(ahi_url)
    datastore_id = create_datastore(ahi, "bench-app")
    start = time.perf_counter()
    result = import_folder(ahi, s3_client(s3_url), datastore_id, folder, timeout_s=1800)
    if result.job_status != "COMPLETED" or result.failure or len(result.image_set_ids) != 1:
        raise RuntimeError(f"import failed: {result.job_status} {result.failure[:3]} {result.image_set_ids}")
    return datastore_id, result.image_set_ids[0], time.perf_counter() - start


def _volume_baselines(exporter: Any, datastore_id: str, image_set_id: str) -> dict[str, float]:
    from monai.deploy.core import Fragment
    from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator

    from app.operators.ahi_data_loader_operator import studies_from_datasets
    from app.selection import choose_series

    out: dict[str, list[float]] = {"datasets": [], "sdk_volume": [], "direct_volume": []}
    volume_op = DICOMSeriesToVolumeOperator(Fragment(), name="volume")
    for _ in range(2):
        start = time.perf_counter()
        datasets = exporter.to_datasets(datastore_id, image_set_id)
        out["datasets"].append(time.perf_counter() - start)
        selected = choose_series(studies_from_datasets(datasets))
        start = time.perf_counter()
        volume_op.convert_to_image(selected)
        out["sdk_volume"].append(time.perf_counter() - start)
        del datasets, selected
        start = time.perf_counter()
        exporter.to_volume(datastore_id, image_set_id)
        out["direct_volume"].append(time.perf_counter() - start)
    return {k: min(v) for k, v in out.items()}


def _seg_pixels(report: dict[str, Any]) -> bytes:
    import pydicom

    return pydicom.dcmread(report["seg"]["path"]).PixelData


def _model_load_s(bundle: Path) -> float:
    import torch

    from app.bundle import MODEL_REL, find_bundle_dir

    path = find_bundle_dir(bundle) / MODEL_REL
    times = []
    for _ in range(3):
        start = time.perf_counter()
        torch.jit.load(str(path), map_location="cpu").eval()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _outside_model(timings: dict[str, float]) -> float:
    """Every stage but inference (the pipeline outside the model)."""
    return sum(v for k, v in timings.items() if k not in ("inference", "total"))


def _table(runs: dict[str, dict[str, Any]]) -> str:
    names = list(runs)
    lines = [f"{'stage (s)':<20}" + "".join(f"{n:>18}" for n in names)]
    for stage in STAGE_ROWS:
        cells = [runs[n]["timingsSeconds"].get(stage) for n in names]
        lines.append(
            f"{stage:<20}" + "".join(f"{c:>18.2f}" if c is not None else f"{'-':>18}" for c in cells)
        )
    cells = [_outside_model(runs[n]["timingsSeconds"]) for n in names]
    lines.append(f"{'all but inference':<20}" + "".join(f"{c:>18.2f}" for c in cells))
    return "\n".join(lines)


def _peak_delta_mb(fn: Any) -> tuple[Any, float]:
    """(result, peak RSS growth in MB while ``fn`` ran) via Linux clear_refs/VmHWM."""
    from scripts.bench_connector import _peak_mb, _reset_peak

    base = _reset_peak()
    result = fn()
    return result, _peak_mb() - base


def _volume_path_peak(exporter: Any, datastore_id: str, image_set_id: str) -> tuple[float, float]:
    """Peak RSS growth (MB) of the serving path's volume building (frames_array + SDK voxel rules) and the
    resulting volume's MB."""
    from app.operators.ahi_data_loader_operator import header_datasets
    from app.operators.ahi_series_to_volume_operator import sdk_voxels

    headers = sorted(
        header_datasets(exporter, datastore_id, image_set_id), key=lambda d: float(d.ImagePositionPatient[2])
    )
    uids = [str(d.SOPInstanceUID) for d in headers]
    exporter.frames_array(datastore_id, image_set_id, uids)  # warm
    volume, peak = _peak_delta_mb(
        lambda: sdk_voxels(exporter.frames_array(datastore_id, image_set_id, uids), headers)
    )
    return peak, volume.nbytes / 2**20


def _outside_model_stages(
    exporter: Any, datastore_id: str, image_set_id: str, seg_frames: int, out_dir: Path, repeat: int = 3
) -> dict[str, float]:
    """The serving path's stages other than inference, called directly (no holoscan), ``repeat`` times;
    median seconds per stage. The mask is an ellipsoid spanning ``seg_frames`` slices (what the warm run's
    SEG held), so SEG and STL do the same amount of work as in the run."""
    import numpy as np
    from monai.deploy.core import Fragment

    from app.bundle_model import ModelIdentity
    from app.operators.ahi_data_loader_operator import load_ahi_studies
    from app.operators.ahi_series_to_volume_operator import AHISeriesToVolumeOperator
    from app.operators.spleen_seg_writer_operator import SpleenSegWriterOperator
    from app.operators.spleen_stl_operator import write_spleen_stl
    from app.request import SegRequest
    from app.run_record import RunRecord
    from app.selection import choose_series

    request = SegRequest.from_json({"datastoreId": datastore_id, "imageSetId": image_set_id})
    identity = ModelIdentity("bench", "0", out_dir, "cpu", "0" * 64, "1.2.3.4", 1)
    samples: dict[str, list[float]] = {}
    for k in range(repeat):
        record = RunRecord()
        fragment = Fragment()
        t0 = time.perf_counter()
        studies = load_ahi_studies(exporter, request, record, with_pixels=False)
        t1 = time.perf_counter()
        selected = choose_series(studies, source=request.describe())
        t2 = time.perf_counter()
        volume_op = AHISeriesToVolumeOperator(fragment, exporter=exporter, record=record, name="v")
        image = volume_op.convert_to_image(selected)
        t3 = time.perf_counter()
        if image is None:
            raise RuntimeError("the volume operator built no image")
        shape = image.asnumpy().shape
        zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
        half = max(1, seg_frames // 2)
        mask = (
            ((zz - shape[0] / 2) / half) ** 2 + ((yy - shape[1] * 0.6) / (shape[1] / 10)) ** 2
            + ((xx - shape[2] * 0.7) / (shape[2] / 14)) ** 2 < 1
        ).astype(np.uint8)  # fmt: skip
        series = selected[0].selected_series[0].series
        writer = SpleenSegWriterOperator(
            fragment, model=identity, output_folder=out_dir / f"seg{k}", name="w"
        )
        t4 = time.perf_counter()
        writer.create_dicom_seg(mask, series, out_dir / f"seg{k}")
        t5 = time.perf_counter()
        datasets = [sop.get_native_sop_instance() for sop in series.get_sop_instances()]
        write_spleen_stl(mask, datasets, out_dir / f"stl{k}" / "spleen.stl")
        t6 = time.perf_counter()
        fetch = record.timings.get("fetch_decode", 0.0)
        for name, value in (
            ("metadata", t1 - t0),
            ("select", t2 - t1),
            ("fetch_decode", fetch),
            ("volume", t3 - t2 - fetch),
            ("seg_write", t5 - t4),
            ("stl", t6 - t5),
        ):
            samples.setdefault(name, []).append(value)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    medians["total"] = sum(medians.values())
    return medians


def _connector_rows(args: argparse.Namespace, url: str, datastore_id: str, image_set_id: str) -> list[dict]:
    """The connector vs the anchor on the served image set, each trial in its own subprocess."""
    from scripts.bench_connector import ensure_anchor, run_trial

    trial_args = argparse.Namespace(repeat=args.repeat, workers=args.workers, timeout=args.timeout)
    rows = []
    for kind, transport, label in (
        ("datasets", "auto", "to_datasets (lean)"),
        ("datasets", "botocore", "to_datasets (botocore)"),
        ("volume", "auto", "to_volume (lean)"),
        ("volume", "botocore", "to_volume (botocore)"),
        ("decode", "auto", "decode only"),
    ):
        log.info("connector trial: %s", label)
        row = run_trial(kind, url, datastore_id, image_set_id, "auto", trial_args, transport=transport)
        rows.append({"trial": label, **row})
    reason = "skipped" if args.skip_anchor else ensure_anchor()
    if reason:
        rows.append({"trial": "anchor", "error": reason})
    else:
        log.info("connector trial: anchor")
        env = {"AWS_ENDPOINT_URL_MEDICAL_IMAGING": url, "AWS_DISABLE_HOST_PREFIX_INJECTION": "true"}
        rows.append({"trial": "anchor", **run_trial("anchor", url, datastore_id, image_set_id, "openjpeg",
                                                    trial_args, env)})  # fmt: skip
    for row in rows:
        if "error" not in row:
            times, cpu = row["times"], row.get("cpu") or []
            row["warm"] = statistics.median(times[1:]) if len(times) > 1 else times[0]
            row["cpu_warm"] = (statistics.median(cpu[1:]) if len(cpu) > 1 else cpu[0]) if cpu else None
    return rows


def _connector_table(rows: list[dict]) -> str:
    by = {r["trial"]: r for r in rows if "error" not in r}
    anchor = by.get("anchor")
    lines = [
        f"{'connector (same image set)':<26}{'frames':>8}{'cold s':>9}{'warm s':>9}{'client CPU ms/fr':>18}"
        f"{'vs anchor (warm)':>18}"
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['trial']:<26}  {r['error'][:70]}")
            continue
        cpu = (
            "n/a"
            if r["trial"] == "anchor" or r["cpu_warm"] is None
            else f"{r['cpu_warm'] / r['frames'] * 1e3:.2f}"
        )
        ratio = f"{anchor['warm'] / r['warm']:.1f}x" if anchor and r is not anchor else "-"
        lines.append(
            f"{r['trial']:<26}{r['frames']:>8}{r['times'][0]:>9.2f}{r['warm']:>9.2f}{cpu:>18}{ratio:>18}"
        )
    vol, dec = by.get("to_volume (lean)"), by.get("decode only")
    if vol and dec and vol.get("cpu_warm") is not None and dec.get("cpu_warm") is not None:
        per = (vol["cpu_warm"] - dec["cpu_warm"]) / vol["frames"] * 1e3
        lines.append(f"client CPU per frame excluding decode (to_volume lean - decode only): {per:.2f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--bundle", type=Path, default=ROOT / "model" / "spleen_ct_segmentation")
    parser.add_argument("--cache", type=Path, default=None, help="phantom cache folder (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--repeat", type=int, default=3, help="calls per connector trial (warm = median 2..N)"
    )
    parser.add_argument("--workers", type=int, default=16, help="connector frame workers")
    parser.add_argument("--timeout", type=float, default=300.0, help="hard limit per connector trial (s)")
    parser.add_argument("--skip-anchor", action="store_true", help="do not install / run the anchor")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("highdicom", "monai", "root", "app", "ahi_connector"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    log.setLevel(logging.INFO)
    os.environ.update(
        {
            k: v
            for k, v in {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }.items()
            if k not in os.environ
        }
    )

    from app.service import SpleenSegService
    from devstack.clients import ahi_client
    from devstack.processes import ahi_local_server, moto_s3_server

    with tempfile.TemporaryDirectory(prefix="bench_app_") as tmp:
        tmp_dir = Path(tmp)
        cache = args.cache or tmp_dir / "phantom"
        cache.mkdir(parents=True, exist_ok=True)
        folder, truth_ml = _phantom(cache, args.slices, args.size, args.seed)
        with moto_s3_server() as s3_url, ahi_local_server(tmp_dir / "ahi", s3_endpoint_url=s3_url) as ahi_url:
            datastore_id, image_set_id, import_s = _import(folder, ahi_url, s3_url)
            log.info("imported %d slices in %.1f s (image set %s)", args.slices, import_s, image_set_id)
            connector = _connector_rows(args, ahi_url, datastore_id, image_set_id)
            start = time.perf_counter()
            service = SpleenSegService(args.bundle, ahi_client=ahi_client(ahi_url))
            init_s = time.perf_counter() - start
            request = {"datastoreId": datastore_id, "imageSetId": image_set_id}
            runs: dict[str, dict[str, Any]] = {}
            peaks: dict[str, float] = {}
            for name, source in (("ahi cold", request), ("ahi warm", request), ("dicom folder", folder)):
                log.info("run: %s", name)
                result, peaks[name] = _peak_delta_mb(
                    lambda s=source, n=name: service.run(s, tmp_dir / n.replace(" ", "_"))
                )
                runs[name] = result.report
            sdk_service = SpleenSegService(
                args.bundle, ahi_client=ahi_client(ahi_url), ahi_direct_volume=False
            )
            for name in ("ahi sdk-path",):  # same process, holoscan and torch already warm
                log.info("run: %s", name)
                result, peaks[name] = _peak_delta_mb(
                    lambda n=name: sdk_service.run(request, tmp_dir / n.replace(" ", "_"))
                )
                runs[name] = result.report
            same_seg = _seg_pixels(runs["ahi warm"]) == _seg_pixels(runs["ahi sdk-path"])
            sdk_service.close()
            exporter = service._get_exporter()
            log.info("serving-path stages without the model (median of 3)")
            outside = _outside_model_stages(
                exporter,
                datastore_id,
                image_set_id,
                runs["ahi warm"]["seg"]["frameCount"],
                tmp_dir / "outside",
            )
            volume_peak_mb, volume_mb = _volume_path_peak(exporter, datastore_id, image_set_id)
            volume = _volume_baselines(exporter, datastore_id, image_set_id)
            service.close()
        model_load_s = _model_load_s(args.bundle)

    warm = runs["ahi warm"]["timingsSeconds"]
    sdk_volume_path = warm["fetch_decode"] + warm["volume"]
    result = {
        "phantom": {"slices": args.slices, "size": args.size, "truth_ml": truth_ml},
        "import_s": import_s,
        "service_init_s": init_s,
        "model_load_s": model_load_s,
        "volume_baselines_s": volume,
        "runs": runs,
        "peak_rss_growth_mb": peaks,
        "outside_model_median_s": outside,
        "volume_path_peak_mb": volume_peak_mb,
        "volume_mb": volume_mb,
        "connector": connector,
        "same_seg_pixels_direct_vs_sdk_path": same_seg,
        "load_average": os.getloadavg(),
    }
    print(
        f"\nAISpleenSegApp, {args.slices} x {args.size}² phantom, CPU ({os.cpu_count()} cores), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(_table(runs))
    print(
        f"\nwarm, all stages but inference: direct path {_outside_model(warm):.2f} s, SDK-compatible path "
        f"{_outside_model(runs['ahi sdk-path']['timingsSeconds']):.2f} s (target <= 1.5 s); "
        f"SEG pixels direct == SDK path: {same_seg}"
    )
    print(
        "serving path without the model, stages called directly, median of 3 (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in outside.items())
        + " (target total <= 1.5 s)"
    )
    print(
        f"peak memory: volume building (frames_array + SDK voxel rules) {volume_peak_mb:.0f} MB = "
        f"{volume_peak_mb / volume_mb:.2f}x the {volume_mb:.0f} MB volume (target <= 3x); whole warm run "
        f"(incl. inference) +{peaks['ahi warm']:.0f} MB direct, +{peaks['ahi sdk-path']:.0f} MB SDK path"
    )
    print()
    print(_connector_table(connector))
    spleen = runs["ahi warm"]["spleen"]
    model = runs["ahi warm"]["model"]
    print(
        f"\nspleen: {spleen['volumeMl']:.1f} mL predicted, {truth_ml:.1f} mL true (model {model['name']} "
        f"{model['version']}, sha256 {model['sha256'][:12]})"
    )
    print(
        f"service init (model load + SDK app) {init_s:.2f} s, once per worker; "
        f"torch.jit.load of model.ts {model_load_s:.2f} s = what the SDK operator would pay per run "
        f"({model_load_s / warm['total']:.1%} of a warm run)"
    )
    sdk_path = volume["datasets"] + volume["sdk_volume"]
    print(
        f"volume: to_datasets {volume['datasets']:.2f} s + SDK DICOMSeriesToVolumeOperator "
        f"{volume['sdk_volume']:.2f} s = {sdk_path:.2f} s "
        f"vs connector to_volume {volume['direct_volume']:.2f} s "
        f"(ratio {sdk_path / volume['direct_volume']:.2f}x); "
        f"SDK volume step = {warm['volume'] / warm['total']:.1%} of a warm run "
        f"(fetch+decode+volume {sdk_volume_path:.2f} s)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate the bundle on fresh phantoms of two families and on negatives, with its own inference config.

    python -m model.evaluate --fresh 20 --negatives 10          # the protocol behind model/evaluation.json
    python -m model.evaluate --seeds-from model/evaluation.json  # the same seeds again (e.g. another bundle)
    python -m model.evaluate --seeds 5000-5009 --families training --negatives 0 --no-moderate  # older one

Families: ``training`` (:func:`model.phantoms.generate_phantom`, the generator the training data comes from,
with its own random acquisition; ``--moderate`` caps the matrix at 384 px, same field of view) and
``independent`` (:mod:`model.independent_phantoms`, written separately, never used for training or
calibration). Negatives have no spleen to find: independent splenectomy, independent field of view below the
spleen, and training-family splenectomy (``Variation(splenectomy=True)``), in turn.

Fresh-seed protocol: with ``--fresh N`` the seeds are drawn at evaluation time from ``os.urandom`` and written
into the report with the time they were drawn; they are never used for any choice (training, calibration,
thresholds). Each phantom is written as a NIfTI image and run through the bundle exactly as configured:
``preprocessing`` (including ``LoadImaged``), ``inferer`` (sliding window), ``postprocessing`` (softmax,
``Invertd`` back to the source grid, spleen-probability threshold, largest component; ``SaveImaged`` dropped).
Positives: Dice against the label on the source grid and the volume against the phantom's true
(partial-volume) volume. Negatives: "no spleen" when the mask is empty, and (``*_quality_rule``) when the
report's ``quality.spleenFound`` would be false (mask under ``app.quality.MIN_FOUND_ML``). Several
``--bundle`` options run every phantom through each bundle (the first one is the report's ``summary``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.bundle import LoadedBundle, load_bundle
from app.quality import spleen_found
from model import SOURCE_BUNDLE_DIR
from model.anatomy import Variation
from model.phantoms import Phantom, generate_phantom, sample_geometry_params, write_image_nifti
from model.train import TrainConfig, parse_seeds

logger = logging.getLogger(__name__)

DEFAULT_SEEDS = "5000-5009"
EVALUATION_JSON = Path(__file__).resolve().parent / "evaluation.json"


FAMILIES = ("training", "independent")
NEGATIVE_KINDS = ("independent_splenectomy", "independent_below_spleen", "training_splenectomy")


@dataclass(frozen=True)
class CaseResult:
    seed: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    patient_position: str
    phase: str
    dice: float
    true_volume_ml: float
    predicted_volume_ml: float
    volume_error_pct: float | None
    seconds: float
    family: str = "training"
    found: bool = True


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred.astype(bool), truth.astype(bool)
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else float(2 * np.logical_and(p, t).sum() / denom)


def segment_file(bundle: LoadedBundle, image_path: Path) -> np.ndarray:
    """Run the bundle's preprocessing, inferer and postprocessing on one image file; label array on its
    grid."""
    import torch

    key_in, key_out = bundle.input_key, bundle.output_key
    data = bundle.preprocessing({key_in: str(image_path)})
    with torch.no_grad():
        data[key_out] = bundle.inferer(data[key_in][None].to(bundle.device), bundle.network)[0]
    data = bundle.postprocessing(data)
    return np.asarray(data[key_out].detach().cpu().numpy()[0], dtype=np.uint8)


def evaluate_phantom(bundle: LoadedBundle, ph: Phantom, work: Path, family: str = "training") -> CaseResult:
    return evaluate_phantom_bundles([bundle], ph, work, family)[0]


def evaluate_phantom_bundles(
    bundles: list[LoadedBundle], ph: Phantom, work: Path, family: str = "training"
) -> list[CaseResult]:
    """Run every bundle on one phantom (written once as NIfTI); one result per bundle."""
    image_path = write_image_nifti(ph, work / f"phantom_{ph.seed}.nii")
    try:
        results = []
        for bundle in bundles:
            start = time.monotonic()
            pred = segment_file(bundle, image_path)  # [col, row, slice] like the NIfTI
            results.append(_score(ph, pred, family, time.monotonic() - start))
        return results
    finally:
        image_path.unlink()


def _score(ph: Phantom, pred: np.ndarray, family: str, seconds: float) -> CaseResult:
    truth = ph.label.transpose(2, 1, 0)
    if pred.shape != truth.shape:
        raise RuntimeError(
            f"phantom seed {ph.seed}: prediction shape {pred.shape} != label shape {truth.shape}"
        )
    vol = float(pred.sum()) * ph.geometry.voxel_volume_ml
    g = ph.geometry
    return CaseResult(
        seed=ph.seed,
        shape=g.shape,
        spacing=tuple(round(s, 3) for s in g.spacing),  # type: ignore
        patient_position=g.patient_position.value,
        phase=ph.phase,
        dice=dice(pred, truth),
        true_volume_ml=ph.spleen_volume_ml,
        predicted_volume_ml=vol,
        volume_error_pct=100 * (vol - ph.spleen_volume_ml) / ph.spleen_volume_ml if truth.any() else None,
        seconds=seconds,
        family=family,
        found=bool(pred.any()),
    )


def summarise(results: list[CaseResult]) -> dict[str, Any]:
    """Aggregates of positive cases (Dice, volume error, spleen found)."""
    if not results:
        return {"cases": 0}
    d = np.array([r.dice for r in results])
    e = np.array([r.volume_error_pct for r in results if r.volume_error_pct is not None])
    return {
        "cases": len(results),
        "mean_dice": float(d.mean()),
        "min_dice": float(d.min()),
        "median_abs_volume_error_pct": float(np.median(np.abs(e))) if e.size else None,
        "max_abs_volume_error_pct": float(np.abs(e).max()) if e.size else None,
        "found_pct": 100.0 * float(np.mean([r.found for r in results])),
        "found_pct_quality_rule": 100.0
        * float(np.mean([spleen_found(r.predicted_volume_ml) for r in results])),
        "mean_seconds": float(np.mean([r.seconds for r in results])),
    }


def summarise_negatives(results: list[CaseResult]) -> dict[str, Any]:
    """Share of negatives reported as "no spleen" (empty mask) and the false volumes."""
    if not results:
        return {"cases": 0}
    return {
        "cases": len(results),
        "no_spleen_pct": 100.0 * float(np.mean([not r.found for r in results])),
        "no_spleen_pct_quality_rule": 100.0
        * float(np.mean([not spleen_found(r.predicted_volume_ml) for r in results])),
        "max_false_volume_ml": float(max(r.predicted_volume_ml for r in results)),
    }


MODERATE_PX = 320
MODERATE_EXTENT_MM = 220.0


def moderate_geometry(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[Any, Any]:
    """Cap a random acquisition for evaluation on a loaded CPU: at most :data:`MODERATE_PX` pixels (same field
    of view, coarser pixels) and :data:`MODERATE_EXTENT_MM` of z coverage (same slice thickness)."""
    nz, n, _ = shape
    dz, px, _ = spacing
    if n > MODERATE_PX:
        px, n = px * n / MODERATE_PX, MODERATE_PX
    nz = min(nz, max(1, int(MODERATE_EXTENT_MM // dz)))
    return (nz, n, n), (dz, px, px)


def make_phantom(family: str, seed: int, moderate: bool) -> Phantom:
    """The phantom of one evaluation family or negative kind for ``seed``."""
    from model.independent_phantoms import generate_independent, sample_independent_geometry

    if family in ("training", "training_splenectomy"):
        g = sample_geometry_params(np.random.default_rng([seed, 0x6E0]))
        shape, spacing = g["shape"], g["spacing"]
        if moderate:
            shape, spacing = moderate_geometry(shape, spacing)
        variation = Variation(splenectomy=True) if family == "training_splenectomy" else None
        return generate_phantom(seed, shape=shape, spacing=spacing, variation=variation)
    gi = sample_independent_geometry(np.random.default_rng([seed, 0x9E0]), moderate=False)
    shape, spacing = (
        moderate_geometry(gi["shape"], gi["spacing"]) if moderate else (gi["shape"], gi["spacing"])
    )
    if family == "independent":
        return generate_independent(seed, shape=shape, spacing=spacing)
    if family == "independent_splenectomy":
        return generate_independent(seed, shape=shape, spacing=spacing, spleen=False)
    if family == "independent_below_spleen":
        return generate_independent(seed, shape=shape, spacing=spacing, fov="below_spleen")
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES + NEGATIVE_KINDS}")


def fresh_seeds(n: int) -> list[int]:
    """``n`` seeds drawn now from the operating system's entropy (31-bit)."""
    return [int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF for _ in range(n)]


def _training_seeds(work_dir: Path) -> set[int]:
    log = work_dir / "log.jsonl"
    if not log.exists():
        return set()
    first = json.loads(log.read_text().splitlines()[0])
    return set(first.get("train_seeds", [])) | set(first.get("val_seeds", []))


def plan(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(family, seed) of every case to run, from --seeds-from, --seeds or --fresh."""
    if args.seeds_from:
        prev = json.loads(Path(args.seeds_from).read_text())
        return [(c["family"], int(c["seed"])) for c in prev["protocol"]["cases"]]
    families = [f for f in args.families.split(",") if f]
    cases: list[tuple[str, int]] = []
    if args.seeds:
        seeds = parse_seeds(args.seeds)
        leaked = set(seeds) & _training_seeds(TrainConfig.work_dir)
        if leaked:
            raise SystemExit(f"seeds {sorted(leaked)} were used for training/validation; pick held-out seeds")
        cases = [(f, s) for f in families for s in seeds]
    else:
        cases = [(f, s) for f in families for s in fresh_seeds(args.fresh)]
    negs = fresh_seeds(args.negatives)
    cases += [(NEGATIVE_KINDS[i % len(NEGATIVE_KINDS)], s) for i, s in enumerate(negs)]
    return cases


def report(
    bundles: list[Path],
    device: str,
    cases: list[tuple[str, int]],
    drawn: str,
    results: dict[str, list[CaseResult]],
    seconds: float,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "protocol": {
            "seeds": "drawn from os.urandom at evaluation time; never used for training, calibration or "
            "thresholds",
            "drawn_at_utc": drawn,
            "cases": [{"family": f, "seed": s} for f, s in cases],
        },
        "device": device,
        "wall_seconds": round(seconds, 1),
        "bundles": {},
    }
    for name, res in results.items():
        out["bundles"][name] = {
            "families": {f: summarise([r for r in res if r.family == f]) for f in FAMILIES},
            "negatives": summarise_negatives([r for r in res if r.family in NEGATIVE_KINDS]),
            "cases": [asdict(r) for r in res],
        }
    first = next(iter(out["bundles"].values()))
    out["summary"] = {
        **{f"{f}_{k}": v for f, s in first["families"].items() for k, v in s.items()},
        **{f"negatives_{k}": v for k, v in first["negatives"].items()},
    }
    return out


def _cached_phantom(cache: Path | None, family: str, seed: int, moderate: bool) -> Phantom:
    import pickle

    if cache is None:
        return make_phantom(family, seed, moderate)
    path = cache / f"{family}_{seed}_{'m' if moderate else 'f'}.pkl"
    if path.exists():
        try:
            return pickle.loads(path.read_bytes())
        except (EOFError, pickle.UnpicklingError):  # another run is still writing it
            logger.warning("cached phantom %s unreadable; generating it again", path)
    ph = make_phantom(family, seed, moderate)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps(ph))
    tmp.replace(path)
    return ph


def merge_reports(paths: list[Path], concat: bool = False) -> dict[str, Any]:
    """One report from several runs of the same cases (e.g. one bundle each, run side by side): the bundles
    of all, the protocol and ``summary`` of the first. Raises ValueError when the cases differ.

    ``concat``: the runs are separate fresh draws instead; their protocols become ``protocol["draws"]`` and
    each bundle's cases are concatenated (a bundle run on fewer draws is aggregated over those, see
    ``cases``)."""
    reports = [json.loads(p.read_text()) for p in paths]
    first = reports[0]
    if concat:
        first["protocol"] = {"draws": [r["protocol"] for r in reports]}
    for p, r in zip(paths[1:], reports[1:], strict=True):
        if not concat and r["protocol"]["cases"] != first["protocol"]["cases"]:
            raise ValueError(f"{p} evaluated other cases than {paths[0]}; merge only runs of the same cases")
        for name, b in r["bundles"].items():
            if concat and name in first["bundles"]:
                first["bundles"][name]["cases"] += b["cases"]
            else:
                first["bundles"].setdefault(name, b)
    for b in first["bundles"].values():  # aggregates recomputed with this version's summaries
        res = [CaseResult(**c) for c in b["cases"]]
        b["families"] = {f: summarise([x for x in res if x.family == f]) for f in FAMILIES}
        b["negatives"] = summarise_negatives([x for x in res if x.family in NEGATIVE_KINDS])
    top = next(iter(first["bundles"].values()))
    first["summary"] = {
        **{f"{f}_{k}": v for f, s in top["families"].items() for k, v in s.items()},
        **{f"negatives_{k}": v for k, v in top["negatives"].items()},
    }
    first["wall_seconds"] = [r["wall_seconds"] for r in reports]
    return first


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    ap = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--fresh", type=int, default=20, help="fresh seeds per family (default 20)")
    ap.add_argument("--negatives", type=int, default=10, help="fresh negative cases (default 10)")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--seeds", default="", help="explicit seeds instead of fresh ones, e.g. 5000-5009")
    ap.add_argument("--seeds-from", default="", help="re-run the cases of an earlier report")
    ap.add_argument(
        "--moderate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"at most {MODERATE_PX} px in-plane and {MODERATE_EXTENT_MM:.0f} mm in z (default on)",
    )
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep the generated phantoms here and reuse them (same cases, another bundle)",
    )
    ap.add_argument("--bundle", type=Path, action="append", default=None, help="repeatable")
    ap.add_argument("--output", type=Path, default=EVALUATION_JSON)
    ap.add_argument("--device", default=None, help="override the config's device (e.g. cpu)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="only merge these reports (same cases) into --output",
    )
    ap.add_argument("--concat", action="store_true", help="--merge: the reports are separate fresh draws")
    args = ap.parse_args(argv)
    if args.merge:
        args.output.write_text(json.dumps(merge_reports(args.merge, args.concat), indent=1) + "\n")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    drawn = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cases = plan(args)
    paths = args.bundle or [SOURCE_BUNDLE_DIR]
    bundles = [load_bundle(p, device=args.device) for p in paths]
    names = [str(p) for p in paths]
    results: dict[str, list[CaseResult]] = {n: [] for n in names}
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for family, seed in tqdm(cases, desc="evaluate", unit="phantom"):
            t0 = time.monotonic()
            ph = _cached_phantom(args.cache, family, seed, args.moderate)
            gen = time.monotonic() - t0
            for name, r in zip(names, evaluate_phantom_bundles(bundles, ph, Path(tmp), family), strict=True):
                results[name].append(r)
                tqdm.write(
                    f"{family} {r.seed}: {r.shape} {r.spacing} {r.phase}: dice {r.dice:.4f}, volume "
                    f"{r.predicted_volume_ml:.1f} vs {r.true_volume_ml:.1f} mL, found {r.found}, "
                    f"{r.seconds:.0f} s (+{gen:.0f} s phantom) [{name}]"
                )
            out = report(paths, str(bundles[0].device), cases, drawn, results, time.monotonic() - start)
            args.output.write_text(json.dumps(out, indent=1) + "\n")  # partial results survive a cut-off
    print(json.dumps(out["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

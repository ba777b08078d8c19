"""Evaluate the bundle on held-out phantoms with the bundle's own inference config.

    python -m model.evaluate --seeds 5000-5009 [--bundle DIR] [--output model/evaluation.json]

Each phantom (random realistic acquisition: 0.6-0.95 mm pixels, 1-5 mm slices, 256-512 px, patient positions,
tilt) is written as a NIfTI image and run through the bundle exactly as configured: ``preprocessing``
(including
``LoadImaged``), ``inferer`` (sliding window 96^3, overlap 0.5), ``postprocessing`` (softmax, ``Invertd``
back to the source grid, spleen-probability threshold, largest component; ``SaveImaged`` dropped). The
prediction is compared with the ground-truth label on the source grid: Dice, and the spleen volume against the
phantom's true volume.
Held-out seeds must not overlap the training seeds (checked against ``model/work/log.jsonl`` when present).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.bundle import LoadedBundle, load_bundle
from model import SOURCE_BUNDLE_DIR
from model.phantoms import Phantom, generate_phantom, write_image_nifti
from model.train import TrainConfig, parse_seeds

logger = logging.getLogger(__name__)

DEFAULT_SEEDS = "5000-5009"
EVALUATION_JSON = Path(__file__).resolve().parent / "evaluation.json"


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
    volume_error_pct: float
    seconds: float


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


def evaluate_phantom(bundle: LoadedBundle, ph: Phantom, work: Path) -> CaseResult:
    start = time.monotonic()
    image_path = write_image_nifti(ph, work / f"phantom_{ph.seed}.nii")
    pred = segment_file(bundle, image_path)  # [col, row, slice] like the NIfTI
    image_path.unlink()
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
        volume_error_pct=100 * (vol - ph.spleen_volume_ml) / ph.spleen_volume_ml,
        seconds=time.monotonic() - start,
    )


def summarise(results: list[CaseResult]) -> dict[str, Any]:
    d = np.array([r.dice for r in results])
    e = np.array([r.volume_error_pct for r in results])
    return {
        "cases": len(results),
        "mean_dice": float(d.mean()),
        "min_dice": float(d.min()),
        "median_abs_volume_error_pct": float(np.median(np.abs(e))),
        "max_abs_volume_error_pct": float(np.abs(e).max()),
    }


def _training_seeds(work_dir: Path) -> set[int]:
    log = work_dir / "log.jsonl"
    if not log.exists():
        return set()
    first = json.loads(log.read_text().splitlines()[0])
    return set(first.get("train_seeds", [])) | set(first.get("val_seeds", []))


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    ap = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--seeds", default=DEFAULT_SEEDS, help=f"held-out phantom seeds (default {DEFAULT_SEEDS})"
    )
    ap.add_argument("--bundle", type=Path, default=SOURCE_BUNDLE_DIR)
    ap.add_argument("--output", type=Path, default=EVALUATION_JSON)
    ap.add_argument("--device", default=None, help="override the config's device (e.g. cpu)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    leaked = set(seeds) & _training_seeds(TrainConfig.work_dir)
    if leaked:
        raise SystemExit(f"seeds {sorted(leaked)} were used for training/validation; pick held-out seeds")
    bundle = load_bundle(args.bundle, device=args.device)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in tqdm(seeds, desc="evaluate", unit="phantom"):
            r = evaluate_phantom(bundle, generate_phantom(seed), Path(tmp))
            results.append(r)
            tqdm.write(
                f"seed {r.seed}: {r.shape} {r.spacing} {r.patient_position} {r.phase}: dice {r.dice:.4f}, "
                f"volume {r.predicted_volume_ml:.1f} vs {r.true_volume_ml:.1f} mL "
                f"({r.volume_error_pct:+.2f} %), {r.seconds:.0f} s"
            )
    summary = summarise(results)
    report = {
        "bundle": str(args.bundle),
        "device": str(bundle.device),
        "summary": summary,
        "cases": [asdict(r) for r in results],
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Choose the bundle's ``spleen_threshold`` (spleen-channel softmax probability) on calibration phantoms.

    python -m model.calibrate --seeds 7000-7005 [--thresholds 0.2,0.25,0.3,0.35,0.4,0.5]

Calibration seeds must be disjoint from the training/validation seeds AND from the held-out evaluation seeds
(``model.evaluate``'s default 5000-5009): the threshold is picked here, the accuracy is reported there.
Each phantom runs once through the bundle's preprocessing, inferer and the postprocessing up to ``Invertd``
(probabilities on the source grid); every threshold is then applied with the largest-connected-component step
the bundle uses. The pick minimises the median |volume error| among thresholds whose mean Dice is within
``--dice-tolerance`` of the best mean Dice.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from app.bundle import load_bundle
from app.components import largest_component
from model import SOURCE_BUNDLE_DIR
from model.evaluate import DEFAULT_SEEDS as EVAL_SEEDS
from model.evaluate import _training_seeds, dice
from model.phantoms import generate_phantom, write_image_nifti
from model.train import TrainConfig, parse_seeds

logger = logging.getLogger(__name__)


def spleen_probability(bundle, image_path: Path) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Spleen-channel probabilities on the source grid (postprocessing up to and including ``Invertd``)."""
    import torch
    from monai.transforms import Compose

    keep = ("Activationsd", "Invertd")
    upto = Compose([t for t in bundle.postprocessing.transforms if type(t).__name__ in keep])
    data = bundle.preprocessing({bundle.input_key: str(image_path)})
    with torch.no_grad():
        data[bundle.output_key] = bundle.inferer(
            data[bundle.input_key][None].to(bundle.device), bundle.network
        )[0]
    data = upto(data)
    return np.asarray(data[bundle.output_key][1].detach().cpu().numpy())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="7000-7005")
    ap.add_argument("--thresholds", default="0.2,0.25,0.3,0.35,0.4,0.5")
    ap.add_argument("--dice-tolerance", type=float, default=0.005)
    ap.add_argument("--bundle", type=Path, default=SOURCE_BUNDLE_DIR)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    overlap = set(seeds) & (_training_seeds(TrainConfig.work_dir) | set(parse_seeds(EVAL_SEEDS)))
    if overlap:
        raise SystemExit(f"calibration seeds {sorted(overlap)} overlap training or held-out seeds")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    bundle = load_bundle(args.bundle)
    dices: dict[float, list[float]] = {t: [] for t in thresholds}
    errors: dict[float, list[float]] = {t: [] for t in thresholds}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            ph = generate_phantom(seed)
            prob = spleen_probability(bundle, write_image_nifti(ph, Path(tmp) / f"p{seed}.nii"))
            truth = ph.label.transpose(2, 1, 0)
            for t in thresholds:
                mask = largest_component(prob > t)
                vol = float(mask.sum()) * ph.geometry.voxel_volume_ml
                dices[t].append(dice(mask, truth))
                errors[t].append(100 * (vol - ph.spleen_volume_ml) / ph.spleen_volume_ml)
    table = {
        t: {
            "mean_dice": float(np.mean(dices[t])),
            "median_abs_volume_error_pct": float(np.median(np.abs(errors[t]))),
        }
        for t in thresholds
    }
    best_dice = max(v["mean_dice"] for v in table.values())
    eligible = [t for t in thresholds if table[t]["mean_dice"] >= best_dice - args.dice_tolerance]
    pick = min(eligible, key=lambda t: table[t]["median_abs_volume_error_pct"])
    print(
        json.dumps({"seeds": seeds, "table": {str(t): v for t, v in table.items()}, "pick": pick}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

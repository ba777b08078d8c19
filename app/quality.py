"""Quality flags of one spleen segmentation, so a user can route suspicious results to review.

Pure functions of numpy arrays (no holoscan, no MONAI), used by the report (``report.json`` ``quality``) and
testable on hand-built masks:

* ``spleenFound``: the mask holds at least :data:`MIN_FOUND_ML` of tissue (smaller remnants of a
  largest-component step are what a network leaves on scans without a spleen; fixed before evaluation).
* ``volumePlausibility``: ``"plausible"`` inside :data:`PLAUSIBLE_VOLUME_ML` (adult spleens, from small
  normal spleens to marked splenomegaly), else ``"implausibly_small"`` / ``"implausibly_large"``; ``"none"``
  without a spleen.
* ``fovEdgeFraction``: share of the mask's voxels in the outermost layer of the volume (first/last slice, row
  or column). A spleen cut by the field of view has an underestimated volume.
* ``components``: connected components of the final mask (:mod:`app.components`, the bundle's
  26-connectivity); ``componentsRemoved``: how many
  the postprocessing dropped, when the mask before that step is known.
* ``meanSpleenProbability``: mean spleen-channel probability inside the mask, when probabilities are known.

The app receives the bundle's postprocessed label map: the bundle itself thresholds the softmax and keeps the
largest connected component (``configs/inference.json``) before the app sees anything, so in the app
``componentsRemoved`` and ``meanSpleenProbability`` are ``None`` and ``unavailable`` says why; callers that
hold the probabilities or the pre-postprocessing mask (e.g. ``model/evaluate.py``-style pipelines) pass them.
``needsReview`` is true when any available flag is outside its expected range (see :func:`review_reasons`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .components import label_components

PLAUSIBLE_VOLUME_ML = (20.0, 1500.0)
MIN_FOUND_ML = 3.0
MAX_FOV_EDGE_FRACTION = 0.01
MIN_MEAN_PROBABILITY = 0.7
UNAVAILABLE_IN_APP = (
    "the bundle's postprocessing (spleen-probability threshold, largest connected component) runs before the "
    "app receives the mask, so neither the probabilities nor the removed components reach the report"
)


def spleen_found(volume_ml: float) -> bool:
    """True when the mask's volume is at least :data:`MIN_FOUND_ML`."""
    return volume_ml >= MIN_FOUND_ML


def volume_plausibility(
    volume_ml: float, found: bool, limits: tuple[float, float] = PLAUSIBLE_VOLUME_ML
) -> str:
    """``"none"`` without a spleen, else ``"plausible"``, ``"implausibly_small"`` or
    ``"implausibly_large"``."""
    if not found:
        return "none"
    lo, hi = limits
    if volume_ml < lo:
        return "implausibly_small"
    if volume_ml > hi:
        return "implausibly_large"
    return "plausible"


def fov_edge_fraction(mask: np.ndarray) -> float:
    """Share of mask voxels lying in the outermost layer of the array along any axis (0.0 for an empty
    mask)."""
    m = np.asarray(mask).astype(bool)
    total = int(m.sum())
    if total == 0:
        return 0.0
    inner = np.zeros_like(m)
    inner[tuple(slice(1, max(1, s - 1)) for s in m.shape)] = True
    return float((m & ~inner).sum()) / total


def count_components(mask: np.ndarray) -> int:
    """Number of 26-connected components of the mask."""
    return label_components(mask)[1]


def components_removed(raw_mask: np.ndarray, final_mask: np.ndarray) -> int:
    """How many components of ``raw_mask`` (before the largest-component step) are absent from the final
    mask."""
    raw = np.asarray(raw_mask).astype(bool)
    final = np.asarray(final_mask).astype(bool)
    if raw.shape != final.shape:
        raise ValueError(f"raw mask shape {raw.shape} differs from the final mask shape {final.shape}")
    labels, n = label_components(raw)
    kept = set(np.unique(labels[final & raw]).tolist()) - {0}
    return int(n - len(kept))


def mean_probability(probability: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean of ``probability`` (spleen channel, 0..1, same grid) inside the mask; None for an empty mask."""
    p, m = np.asarray(probability, dtype=np.float64), np.asarray(mask).astype(bool)
    if p.shape != m.shape:
        raise ValueError(f"probability shape {p.shape} differs from the mask shape {m.shape}")
    return float(p[m].mean()) if m.any() else None


def review_reasons(flags: dict[str, Any]) -> list[str]:
    """Why a result should be reviewed (empty: nothing suspicious among the available flags)."""
    reasons = []
    if not flags["spleenFound"]:
        reasons.append(
            "no spleen found" + (f" (mask of {flags['volumeMl']} mL)" if flags["volumeMl"] else "")
        )
    elif flags["volumePlausibility"] != "plausible":
        reasons.append(f"volume {flags['volumeMl']} mL is {flags['volumePlausibility'].replace('_', ' ')}")
    if flags["fovEdgeFraction"] > MAX_FOV_EDGE_FRACTION:
        reasons.append(
            f"{100 * flags['fovEdgeFraction']:.1f} % of the mask lies at the edge of the field of view"
        )
    if flags["components"] > 1:
        reasons.append(f"the mask has {flags['components']} separate components")
    if flags["componentsRemoved"]:
        reasons.append(f"{flags['componentsRemoved']} components were removed by the postprocessing")
    p = flags["meanSpleenProbability"]
    if p is not None and p < MIN_MEAN_PROBABILITY:
        reasons.append(f"mean spleen probability {p:.2f} is below {MIN_MEAN_PROBABILITY}")
    return reasons


def quality_flags(
    mask: np.ndarray,
    voxel_volume_ml: float,
    probability: np.ndarray | None = None,
    raw_mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """All flags of one mask (see the module doc); JSON-serialisable."""
    m = np.asarray(mask).astype(bool)
    volume = float(m.sum()) * float(voxel_volume_ml)
    found = spleen_found(volume)
    unavailable = []
    if probability is None:
        unavailable.append("meanSpleenProbability")
    if raw_mask is None:
        unavailable.append("componentsRemoved")
    mean_p = mean_probability(probability, m) if probability is not None and found else None
    flags: dict[str, Any] = {
        "spleenFound": found,
        "volumeMl": round(volume, 3),
        "volumePlausibility": volume_plausibility(volume, found),
        "plausibleVolumeMl": list(PLAUSIBLE_VOLUME_ML),
        "fovEdgeFraction": round(fov_edge_fraction(m), 5),
        "components": count_components(m),
        "componentsRemoved": components_removed(raw_mask, m) if raw_mask is not None else None,
        "meanSpleenProbability": None if mean_p is None else round(mean_p, 4),
    }
    if unavailable:
        flags["unavailable"] = {"flags": unavailable, "reason": UNAVAILABLE_IN_APP}
    reasons = review_reasons(flags)
    flags["needsReview"] = bool(reasons)
    flags["reviewReasons"] = reasons
    return flags

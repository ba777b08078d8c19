"""Quality flags of app/quality.py on hand-built masks (no holoscan)."""

from __future__ import annotations

import numpy as np
import pytest

from app.quality import (
    PLAUSIBLE_VOLUME_ML,
    components_removed,
    count_components,
    fov_edge_fraction,
    mean_probability,
    quality_flags,
    volume_plausibility,
)


def _ball(shape: tuple[int, int, int], centre: tuple[int, int, int], r: float) -> np.ndarray:
    k, j, i = np.indices(shape)
    return ((k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2) <= r * r


def test_empty_mask_is_not_found_and_needs_review() -> None:
    flags = quality_flags(np.zeros((10, 12, 14), np.uint8), voxel_volume_ml=0.001)
    assert flags["spleenFound"] is False
    assert flags["volumePlausibility"] == "none"
    assert flags["components"] == 0 and flags["fovEdgeFraction"] == 0.0
    assert flags["needsReview"] is True and flags["reviewReasons"] == ["no spleen found"]
    assert set(flags["unavailable"]["flags"]) == {"meanSpleenProbability", "componentsRemoved"}


def test_central_ball_of_plausible_volume_needs_no_review() -> None:
    mask = _ball((40, 40, 40), (20, 20, 20), 10)
    voxel_ml = 150.0 / mask.sum()  # a 150 mL spleen
    flags = quality_flags(mask, voxel_ml, probability=np.where(mask, 0.95, 0.01), raw_mask=mask)
    assert flags["spleenFound"] and flags["volumePlausibility"] == "plausible"
    assert flags["volumeMl"] == pytest.approx(150.0, rel=1e-6)
    assert flags["fovEdgeFraction"] == 0.0 and flags["components"] == 1 and flags["componentsRemoved"] == 0
    assert flags["meanSpleenProbability"] == pytest.approx(0.95)
    assert flags["needsReview"] is False and "unavailable" not in flags


def test_volume_plausibility_limits() -> None:
    lo, hi = PLAUSIBLE_VOLUME_ML
    assert volume_plausibility(lo / 2, True) == "implausibly_small"
    assert volume_plausibility(hi * 2, True) == "implausibly_large"
    assert volume_plausibility((lo + hi) / 2, True) == "plausible"
    small = _ball((20, 20, 20), (10, 10, 10), 3)
    flags = quality_flags(small, voxel_volume_ml=10.0 / small.sum())  # 10 mL
    assert (
        flags["spleenFound"] and flags["volumePlausibility"] == "implausibly_small" and flags["needsReview"]
    )
    assert any("implausibly small" in r for r in flags["reviewReasons"])
    flags = quality_flags(small, voxel_volume_ml=1.0 / small.sum())  # a 1 mL remnant: not a spleen
    assert not flags["spleenFound"] and flags["reviewReasons"] == ["no spleen found (mask of 1.0 mL)"]


def test_fov_edge_fraction_counts_voxels_on_the_outer_layer() -> None:
    mask = np.zeros((10, 10, 10), bool)
    mask[0, 4:6, 4:6] = True  # 4 voxels on the first slice
    mask[1:3, 4:6, 4:6] = True  # 8 inside
    assert fov_edge_fraction(mask) == pytest.approx(4 / 12)
    mask[:] = False
    mask[4:6, 4:6, 8:10] = True  # last column is the edge: half of the voxels
    assert fov_edge_fraction(mask) == pytest.approx(0.5)
    flags = quality_flags(mask, 10.0)
    assert any("edge of the field of view" in r for r in flags["reviewReasons"])


def test_components_and_removed_components() -> None:
    a = _ball((30, 30, 30), (10, 10, 10), 5)
    b = _ball((30, 30, 30), (22, 22, 22), 2)
    c = np.zeros_like(a)
    c[2, 27, 2] = True
    raw = a | b | c
    assert count_components(raw) == 3
    assert components_removed(raw, a) == 2
    assert components_removed(a, a) == 0
    diag = np.zeros((3, 3, 3), bool)
    diag[0, 0, 0] = diag[1, 1, 1] = True  # corner neighbours: one component under 26-connectivity
    assert count_components(diag) == 1
    flags = quality_flags(a | b, 0.1)
    assert flags["components"] == 2 and flags["needsReview"]
    with pytest.raises(ValueError, match="differs from the final mask"):
        components_removed(raw, a[:-1])


def test_mean_probability_inside_the_mask_only() -> None:
    mask = np.zeros((4, 4, 4), bool)
    mask[1:3, 1:3, 1:3] = True
    prob = np.full(mask.shape, 0.1)
    prob[mask] = 0.5
    assert mean_probability(prob, mask) == pytest.approx(0.5)
    assert mean_probability(prob, np.zeros_like(mask)) is None
    flags = quality_flags(mask, 20.0, probability=prob)
    assert any("mean spleen probability 0.50" in r for r in flags["reviewReasons"])
    with pytest.raises(ValueError, match="probability shape"):
        mean_probability(prob[:2], mask)

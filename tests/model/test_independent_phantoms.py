"""The independent evaluation family: deterministic per seed, plausible anatomy, empty negative labels."""

from __future__ import annotations

import numpy as np
import pytest

from model.independent_phantoms import IndependentAnatomy, generate_independent, spleen_centroid_lps
from model.scan_geometry import PatientPosition

SMALL = {"shape": (20, 72, 72), "spacing": (6.0, 5.0, 5.0)}


def test_same_seed_same_phantom_other_seed_differs() -> None:
    a = generate_independent(5, **SMALL)
    b = generate_independent(5, **SMALL)
    c = generate_independent(6, **SMALL)
    assert np.array_equal(a.stored, b.stored) and np.array_equal(a.label, b.label)
    assert a.spleen_volume_ml == b.spleen_volume_ml > 0
    assert not np.array_equal(a.stored, c.stored)


@pytest.mark.parametrize("seed", range(12))
def test_layout_spleen_left_posterior_lateral_stomach_anteromedial_kidney_posteromedial(seed: int) -> None:
    anat = IndependentAnatomy(np.random.default_rng([seed, 0x1DE9]))
    sx, sy, _ = anat.spleen_centre
    kx, ky, _ = anat.kidney_left_centre
    fx, fy, _ = anat.stomach_fundus
    assert sx > 30 and sy > anat.y0  # left upper quadrant, posterior half (LPS: +x left, +y posterior)
    assert fx < sx and fy < sy  # stomach antero-medial
    assert kx < sx and ky > fy  # kidney medial to the spleen, posterior to the stomach
    assert 20 <= anat.hu["spleen"] <= 200 and 30 <= anat.hu["liver"] <= 170
    assert -130 <= anat.hu["visceral_fat"] <= -50


@pytest.mark.parametrize("position", [PatientPosition.HFS, PatientPosition.FFP])
def test_image_spleen_is_left_posterior_with_soft_tissue_hu(position: PatientPosition) -> None:
    ph = generate_independent(3, **SMALL, patient_position=position, tilt_deg=0)
    x, y, _ = spleen_centroid_lps(ph)
    assert x > 30 and y > 0
    hu = ph.hu
    inner = ph.label.astype(bool)
    assert 20 < float(np.median(hu[inner])) < 200
    assert float(np.percentile(hu, 5)) < -900  # air around the body


def test_negatives_have_empty_labels() -> None:
    for ph in (
        generate_independent(8, **SMALL, spleen=False),
        generate_independent(8, **SMALL, fov="below_spleen"),
    ):
        assert ph.label.sum() == 0 and ph.spleen_volume_ml == 0.0
        assert float(np.percentile(ph.hu, 95)) > 0  # still a body in the field of view
    with pytest.raises(ValueError, match="fov must be"):
        generate_independent(8, **SMALL, fov="head")

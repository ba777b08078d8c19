"""Domain-randomised training data: the explicit anatomy options do what they say, negatives have no spleen,
and the per-patch intensity randomisation changes contrasts but never the label."""

from __future__ import annotations

import numpy as np

from model.anatomy import Variation, sample_anatomy
from model.phantoms import generate_phantom
from model.randomized import (
    TISSUES,
    RandomizedCase,
    _thick_slices,
    case_options,
    random_case_patch,
    render_case,
    synthesize,
    tissue_hu,
)

SMALL = {"shape": (16, 64, 64), "spacing": (7.5, 6.0, 6.0)}
SPLEEN = TISSUES.index("spleen")


def _layers(variation: Variation | None, seed: int = 3) -> list[str]:
    rng, vrng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    anat = sample_anatomy(rng, variation=variation, variation_rng=vrng if variation else None)
    return [la.name for la in anat.layers]


def test_no_variation_keeps_the_original_family() -> None:
    a = generate_phantom(31, **SMALL)
    b = generate_phantom(31, **SMALL, variation=None)
    assert np.array_equal(a.stored, b.stored) and a.spleen_volume_ml > 0
    assert "spleen" in _layers(None) and not any(n.startswith("bed") for n in _layers(None))


def test_splenectomy_has_no_spleen_and_bowel_in_its_bed() -> None:
    names = _layers(Variation(splenectomy=True))
    assert not any(n.startswith("spleen") for n in names) and any(n.startswith("bed") for n in names)
    ph = generate_phantom(31, **SMALL, variation=Variation(splenectomy=True))
    assert ph.label.sum() == 0 and ph.spleen_volume_ml == 0.0


def test_variation_options_change_spleen_size_clefts_and_accessory_spleen() -> None:
    accessory = Variation(accessory_probability=1.0, max_clefts=0)
    assert "spleen_accessory" in _layers(accessory)
    assert not any("notch" in n for n in _layers(accessory))
    assert "spleen_accessory" not in _layers(Variation(accessory_probability=0.0))
    clefts = [sum("notch" in n for n in _layers(Variation(max_clefts=5), s)) for s in range(12)]
    assert max(clefts) > 2  # the original family has at most 2
    small = generate_phantom(40, **SMALL, variation=Variation(spleen_volume_ml=(25, 26), scale_range=(1, 1)))
    large = generate_phantom(
        40, **SMALL, variation=Variation(spleen_volume_ml=(900, 950), scale_range=(1, 1))
    )
    assert small.spleen_volume_ml < 60 < 500 < large.spleen_volume_ml


def test_case_options_give_negatives_and_rendered_label_matches_tissue_map() -> None:
    opts = [case_options(s) for s in range(20000, 20100)]
    assert 3 <= sum(o.variation.splenectomy for o in opts) <= 25
    assert 2 <= sum(not o.spleen_in_fov for o in opts) <= 20
    seed = next(o.seed for o in opts if o.spleen_in_fov and not o.variation.splenectomy)
    tissue, hu, label, info = render_case(seed, grid_mm=(6.0, 4.5, 4.5))
    assert tissue.shape == hu.shape == label.shape and label.sum() > 0
    assert np.mean(tissue[label > 0] == SPLEEN) > 0.9
    neg = next(o.seed for o in opts if o.variation.splenectomy)
    _, _, neg_label, neg_info = render_case(neg, grid_mm=(6.0, 4.5, 4.5))
    assert neg_label.sum() == 0 and neg_info["spleen_ml"] == 0.0


def test_synthesize_randomises_contrast_but_keeps_the_label() -> None:
    tissue = np.zeros((48, 48, 48), np.uint8)
    tissue[8:40, 8:40, 8:40] = TISSUES.index("visceral_fat")
    tissue[16:32, 16:32, 16:32] = SPLEEN
    label = (tissue == SPLEEN).astype(np.uint8)
    hu = np.where(label > 0, 110, -90).astype(np.int16)
    means, kept = [], 0
    for s in range(12):
        img, lbl = synthesize(tissue, hu, label, np.random.default_rng(s))
        assert img.shape == tissue.shape and img.dtype == np.float32
        assert set(np.unique(lbl)) <= {0, 1} and not (lbl & ~label.astype(bool)).any()
        kept += int(np.array_equal(lbl, label))
        means.append(float(img[label > 0].mean()))
    assert np.ptp(means) > 60 and kept >= 6  # contrasts vary widely; most patches keep the whole label
    luts = np.stack([tissue_hu(np.random.default_rng(s)) for s in range(50)])
    spleen, liver = luts[:, SPLEEN], luts[:, TISSUES.index("liver")]
    assert (spleen < liver).any() and (spleen > liver).any()


def test_thick_slices_blur_along_z_only() -> None:
    img = np.zeros((8, 8, 40), np.float32)
    img[:, :, ::2] = 100.0
    rng = np.random.default_rng(0)
    out = [_thick_slices(img, np.random.default_rng(s)) for s in range(30)]
    assert any(float(o[:, :, 4:36].std()) < 25 for o in out)  # some thick: z detail averaged away
    assert all(np.allclose(o[0], o[5]) for o in out)  # nothing changes in-plane
    case = RandomizedCase(
        0,
        np.zeros((50, 50, 50), np.uint8),
        np.zeros((50, 50, 50), np.int16),
        np.zeros((50, 50, 50), np.uint8),
        np.array([], int),
    )
    t, h, lab = random_case_patch(case, rng, 64, positive=True)
    assert t.shape == h.shape == lab.shape == (64, 64, 64) and int(h[-1, -1, -1]) == -1000

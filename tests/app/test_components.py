"""The one largest-component rule equals MONAI's KeepLargestConnectedComponent (the bundle's own step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import KeepLargestConnectedComponent

from app.components import label_components, largest_component


def _monai_largest(mask: np.ndarray) -> np.ndarray:
    out = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False)(torch.as_tensor(mask[None]))
    return np.asarray(out[0]) > 0


@pytest.mark.parametrize("seed", range(6))
def test_largest_component_matches_monai_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = (rng.random((12, 14, 16)) > 0.72).astype(np.uint8)
    np.testing.assert_array_equal(largest_component(mask), _monai_largest(mask))


def test_corner_contact_joins_components_and_empty_mask_stays_empty() -> None:
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[0, 0, 0] = mask[1, 1, 1] = 1  # touch by a corner only
    mask[3, 3, 3] = 1
    _, count = label_components(mask)
    assert count == 2
    assert int(largest_component(mask).sum()) == 2
    assert not largest_component(np.zeros((3, 3, 3), np.uint8)).any()

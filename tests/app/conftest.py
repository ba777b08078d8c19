"""Fixtures of the app tests: a random-weight official-architecture bundle, small CT inputs, services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.synthetic import SeriesSpec, SyntheticSeries, write_series

#: Small enough for the shared 2-core CI machine: 2x2x1 sliding windows of 96^3 at the bundle's spacing.
SMALL_CT = SeriesSpec(
    slices=40,
    rows=128,
    columns=128,
    pixel_spacing=(1.5, 1.5),
    slice_spacing=2.0,
    origin=(-96.0, -96.0, -40.0),
    series_description="synthetic abdomen axial",
)


@pytest.fixture(scope="session")
def random_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official spleen UNet architecture with random (seeded) weights, written as a bundle directory."""
    import torch

    from app.bundle import read_configs, write_bundle
    from model import SOURCE_BUNDLE_DIR
    from model.network import build_network

    torch.manual_seed(0)
    bundle = tmp_path_factory.mktemp("random_bundle") / "spleen_ct_segmentation"
    write_bundle(bundle, build_network(), *read_configs(SOURCE_BUNDLE_DIR))
    return bundle


@pytest.fixture(scope="session")
def small_ct(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSeries:
    return write_series(tmp_path_factory.mktemp("small_ct"), SMALL_CT)


@pytest.fixture(scope="session")
def folder_service(random_bundle: Path) -> Iterator[object]:
    from app.service import SpleenSegService

    yield SpleenSegService(random_bundle)

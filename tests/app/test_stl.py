"""Spleen STL: the mesh of a known sphere lands where the DICOM headers put it (LPS mm), with its volume."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
import trimesh

from app.operators.spleen_stl_operator import write_spleen_stl
from devstack.synthetic import SeriesSpec, write_series

RADIUS = 10.0
CENTRE = np.array([-2.0, 3.0, 130.0])


def _headers(tmp_path: Path, row_cosine: tuple[float, float, float], col_cosine: tuple[float, float, float]):
    spec = SeriesSpec(slices=30, rows=48, columns=48, pixel_spacing=(1.0, 1.0), slice_spacing=2.0)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in write_series(tmp_path, spec).paths]
    origin_x, origin_y = -24.0 * row_cosine[0], -24.0 * col_cosine[1]  # field of view centred on x = y = 0
    for k, ds in enumerate(datasets):
        ds.ImageOrientationPatient = [*row_cosine, *col_cosine]
        ds.ImagePositionPatient = [origin_x, origin_y, 100.0 + 2.0 * k]
    return datasets


@pytest.mark.parametrize(
    ("row_cosine", "col_cosine"), [((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0))]
)
def test_sphere_mesh_is_placed_and_sized_by_the_series_geometry(
    tmp_path: Path, row_cosine: tuple[float, float, float], col_cosine: tuple[float, float, float]
) -> None:
    datasets = _headers(tmp_path, row_cosine, col_cosine)
    first = datasets[0]
    d, h, w = np.meshgrid(np.arange(30), np.arange(48), np.arange(48), indexing="ij")
    # Voxel centres from the headers: IPP + column index * row cosine + row index * column cosine + z.
    x = float(first.ImagePositionPatient[0]) + w * row_cosine[0] + h * col_cosine[0]
    y = float(first.ImagePositionPatient[1]) + w * row_cosine[1] + h * col_cosine[1]
    z = 100.0 + 2.0 * d
    mask = ((x - CENTRE[0]) ** 2 + (y - CENTRE[1]) ** 2 + (z - CENTRE[2]) ** 2 <= RADIUS**2).astype(np.uint8)
    mask[0, 0, 0] = 1  # a stray voxel: only the largest component is meshed
    shuffled = list(datasets)
    random.Random(0).shuffle(shuffled)

    path = write_spleen_stl(mask, shuffled, tmp_path / "out" / "spleen.stl")
    assert path is not None and path.is_file()
    mesh = trimesh.load(str(path), file_type="stl")
    assert mesh.is_watertight
    np.testing.assert_allclose(mesh.centroid, CENTRE, atol=0.6)
    np.testing.assert_allclose(mesh.bounds, [CENTRE - RADIUS, CENTRE + RADIUS], atol=2.0)
    assert mesh.volume == pytest.approx(4.0 / 3.0 * np.pi * RADIUS**3, rel=0.1)


def test_empty_mask_writes_no_stl(tmp_path: Path) -> None:
    datasets = _headers(tmp_path, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    assert write_spleen_stl(np.zeros((30, 48, 48), np.uint8), datasets, tmp_path / "x.stl") is None
    assert not (tmp_path / "x.stl").exists()

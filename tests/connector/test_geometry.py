"""Geometry against positions computed here from known parameters (not from ahi_connector)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ahi_connector.errors import GeometryError
from ahi_connector.geometry import SlicePlane, compute_geometry, slice_normal


def _stack(n=6, spacing=2.5, origin=(-10.0, 20.0, 30.0), iop=(1, 0, 0, 0, 1, 0), ps=(0.7, 0.8)):
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    normal = np.cross(row, col)
    return [
        SlicePlane(f"slice{k}", tuple(np.array(origin) + k * spacing * normal), tuple(iop), ps)
        for k in range(n)
    ]


def test_sorts_shuffled_slices_along_normal_and_reports_spacing_origin_affine():
    planes = _stack()
    shuffled = [planes[i] for i in (3, 0, 5, 1, 4, 2)]
    geo = compute_geometry(shuffled)
    assert [shuffled[i].label for i in geo.order] == [f"slice{k}" for k in range(6)]
    assert geo.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert geo.origin == pytest.approx((-10.0, 20.0, 30.0))
    # index (d, h, w) = (2, 3, 4): origin + 2*2.5*z + 3*0.7*y(col cosine) + 4*0.8*x(row cosine)
    expected = np.array([-10.0 + 4 * 0.8, 20.0 + 3 * 0.7, 30.0 + 2 * 2.5, 1.0])
    assert geo.affine @ np.array([2, 3, 4, 1]) == pytest.approx(expected)
    assert geo.direction[:, 0] == pytest.approx([0, 0, 1])


def test_oblique_and_reversed_stack():
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    iop = (c, s, 0.0, 0.0, 0.0, -1.0)  # coronal-ish, rotated
    planes = _stack(n=5, spacing=3.0, iop=iop)[::-1]
    geo = compute_geometry(planes)
    normal = np.cross(iop[:3], iop[3:])
    assert geo.normal == pytest.approx(tuple(normal))
    assert geo.origin == pytest.approx(planes[-1].position)
    assert geo.spacing[0] == pytest.approx(3.0)
    ras = geo.affine_ijk_ras() @ np.array([0, 0, 1, 1])
    lps = np.array(planes[-1].position) + 3.0 * normal
    assert ras[:3] == pytest.approx([-lps[0], -lps[1], lps[2]])


def test_single_slice_uses_default_spacing():
    geo = compute_geometry(_stack(n=1), default_slice_spacing=5.0)
    assert geo.spacing[0] == 5.0


def test_missing_position_names_the_slice():
    planes = _stack(3)
    planes[1] = SlicePlane("instance 1.2.3", None, planes[1].orientation, planes[1].pixel_spacing)
    with pytest.raises(GeometryError, match=r"instance 1\.2\.3 has no \(0020,0032\) Image Position"):
        compute_geometry(planes)


def test_missing_orientation():
    planes = _stack(3)
    planes[2] = SlicePlane("instance 9", planes[2].position, None, planes[2].pixel_spacing)
    with pytest.raises(GeometryError, match=r"instance 9 has no \(0020,0037\) Image Orientation"):
        compute_geometry(planes)


def test_mixed_orientation():
    planes = _stack(3) + _stack(2, iop=(0, 1, 0, 0, 0, -1), origin=(0, 0, 0))
    with pytest.raises(GeometryError, match=r"mixed orientations: slice0 has"):
        compute_geometry(planes)


def test_non_uniform_spacing_names_the_gap():
    planes = _stack(6)
    del planes[3]
    with pytest.raises(
        GeometryError, match=r"non-uniform slice spacing: gap between slice2 and slice4 is 5\.0000 mm"
    ):
        compute_geometry(planes)


def test_duplicate_positions():
    planes = _stack(4)
    planes.append(SlicePlane("dup", planes[1].position, planes[1].orientation, planes[1].pixel_spacing))
    with pytest.raises(GeometryError, match=r"duplicate slice position"):
        compute_geometry(planes)


def test_tilted_stack_is_rejected():
    planes = [
        SlicePlane(
            p.label, (p.position[0], p.position[1] + 0.5 * k, p.position[2]), p.orientation, p.pixel_spacing
        )
        for k, p in enumerate(_stack(5))
    ]
    with pytest.raises(GeometryError, match=r"do not stack along their normal"):
        compute_geometry(planes)


def test_degenerate_orientation():
    with pytest.raises(GeometryError, match=r"parallel cosines"):
        slice_normal([1, 0, 0, 1, 0, 0])

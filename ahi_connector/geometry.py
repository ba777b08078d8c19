"""THE DICOM geometry module of the project: slice sorting, spacing, direction cosines, affine. LPS
throughout.

Conventions (DICOM PS3.3 C.7.6.2):
- ImageOrientationPatient (IOP) = row cosine (direction of increasing column index) then column cosine
  (direction of increasing row index); slice normal = row × column.
- ImagePositionPatient (IPP) = LPS position in mm of the centre of the first transmitted pixel.
- PixelSpacing = (row spacing, column spacing) = (distance between rows, distance between columns).
- Volumes are arrays in (slices, rows, columns) order, "DHW", slices sorted by increasing projection of IPP on
  the normal. ``VolumeGeometry.affine`` maps an index (d, h, w, 1) of that array to LPS mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import GeometryError

ORIENTATION_TOL = 1e-3  # max abs difference between direction cosines of two slices
SPACING_RTOL = 0.02  # max relative deviation of one gap from the median gap
STACK_TOL_MM = 0.05  # max in-plane drift between successive slices (tilted / sheared stacks)


@dataclass(frozen=True)
class SlicePlane:
    """One 2-D frame as the geometry module sees it; ``label`` names it in error messages."""

    label: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None


@dataclass(frozen=True)
class VolumeGeometry:
    """Geometry of a regular stack of slices.

    ``order[k]`` is the index (in the input list) of the plane that becomes slice ``k``. ``spacing`` is in DHW
    order: (slice spacing, row spacing, column spacing) in mm. ``direction`` is 3×3 with columns = LPS unit
    vectors of increasing slice (d), row (h) and column (w) index, so ``affine[:3, :3] == direction *
    spacing``.
    """

    order: tuple[int, ...]
    origin: tuple[float, float, float]
    row_cosine: tuple[float, float, float]
    column_cosine: tuple[float, float, float]
    normal: tuple[float, float, float]
    spacing: tuple[float, float, float]

    @property
    def direction(self) -> np.ndarray:
        """3×3 whose column ``a`` is the LPS unit vector of array axis ``a`` in DHW order (normal, column,
        row)."""
        return np.column_stack([self.normal, self.column_cosine, self.row_cosine]).astype(float)

    @property
    def affine(self) -> np.ndarray:
        """4×4 mapping (d, h, w, 1) array indices to LPS mm (pixel centres)."""
        dz, dy, dx = self.spacing
        aff = np.eye(4)
        aff[:3, 0] = np.asarray(self.normal) * dz
        aff[:3, 1] = np.asarray(self.column_cosine) * dy
        aff[:3, 2] = np.asarray(self.row_cosine) * dx
        aff[:3, 3] = self.origin
        return aff

    def affine_ijk_ras(self) -> np.ndarray:
        """4×4 mapping (w, h, d, 1) indices (array transposed to (cols, rows, slices)) to RAS mm, as NIfTI
        wants."""
        dz, dy, dx = self.spacing
        aff = np.eye(4)
        aff[:3, 0] = np.asarray(self.row_cosine) * dx
        aff[:3, 1] = np.asarray(self.column_cosine) * dy
        aff[:3, 2] = np.asarray(self.normal) * dz
        aff[:3, 3] = self.origin
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal (row cosine × column cosine) of an IOP; raises GeometryError when degenerate."""
    iop = np.asarray(orientation, dtype=float)
    if iop.shape != (6,) or not np.all(np.isfinite(iop)):
        raise GeometryError(
            f"(0020,0037) Image Orientation (Patient) must be 6 numbers, got {list(orientation)}"
        )
    normal = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise GeometryError(
            f"(0020,0037) Image Orientation (Patient) {list(orientation)} has parallel cosines"
        )
    return np.asarray(normal / norm)


def _unit(v: np.ndarray) -> tuple[float, float, float]:
    u = v / np.linalg.norm(v)
    return (float(u[0]), float(u[1]), float(u[2]))


def _require(planes: Sequence[SlicePlane]) -> None:
    if not planes:
        raise GeometryError("no slices to build a volume from")
    for p in planes:
        if p.position is None:
            raise GeometryError(
                f"{p.label} has no (0020,0032) Image Position (Patient); cannot place it in a volume"
            )
        if p.orientation is None:
            raise GeometryError(
                f"{p.label} has no (0020,0037) Image Orientation (Patient); cannot place it in a volume"
            )
        if p.pixel_spacing is None:
            raise GeometryError(f"{p.label} has no (0028,0030) Pixel Spacing; cannot build a metric volume")


def _check_same_orientation(planes: Sequence[SlicePlane]) -> None:
    ref = np.asarray(planes[0].orientation, dtype=float)
    for p in planes[1:]:
        if np.max(np.abs(np.asarray(p.orientation, dtype=float) - ref)) > ORIENTATION_TOL:
            raise GeometryError(
                f"mixed orientations: {p.label} has (0020,0037) Image Orientation (Patient) "
                f"{list(p.orientation or ())}"
                f" but {planes[0].label} has {list(ref)}; select slices of one orientation"
            )
    ref_ps = np.asarray(planes[0].pixel_spacing, dtype=float)
    for p in planes[1:]:
        if np.max(np.abs(np.asarray(p.pixel_spacing, dtype=float) - ref_ps)) > 1e-4:
            raise GeometryError(
                f"mixed (0028,0030) Pixel Spacing: {p.label} has {list(p.pixel_spacing or ())}, "
                f"{planes[0].label} has {list(ref_ps)}"
            )


def _check_spacing(gaps: np.ndarray, sorted_planes: list[SlicePlane]) -> float:
    if np.any(gaps < 1e-4):
        k = int(np.argmin(gaps))
        raise GeometryError(
            f"duplicate slice position: {sorted_planes[k].label} and {sorted_planes[k + 1].label} lie at "
            f"the same place along the slice normal; the series holds overlapping stacks"
        )
    median = float(np.median(gaps))
    dev = np.abs(gaps - median)
    k = int(np.argmax(dev))
    if dev[k] > max(SPACING_RTOL * median, 1e-3):
        raise GeometryError(
            f"non-uniform slice spacing: gap between {sorted_planes[k].label} and "
            f"{sorted_planes[k + 1].label} is "
            f"{gaps[k]:.4f} mm, median gap {median:.4f} mm (tolerance {SPACING_RTOL:.0%}); missing slices?"
        )
    return median


def compute_geometry(
    planes: Sequence[SlicePlane], default_slice_spacing: float | None = None
) -> VolumeGeometry:
    """Sort ``planes`` along their common normal and validate that they form one regular volume.

    Raises GeometryError on missing IPP/IOP/PixelSpacing, mixed orientation or pixel spacing, duplicate
    positions, non-uniform spacing, or slices that drift in-plane (sheared / tilted stacks). With one slice,
    the slice spacing is ``default_slice_spacing`` (e.g. Spacing Between Slices or Slice Thickness) or 1.0.
    """
    _require(planes)
    _check_same_orientation(planes)
    iop = np.asarray(planes[0].orientation, dtype=float)
    normal = slice_normal([float(v) for v in iop])
    positions = np.asarray([p.position for p in planes], dtype=float)
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    sorted_planes = [planes[i] for i in order]
    if len(planes) > 1:
        spacing_z = _check_spacing(np.diff(dist[order]), sorted_planes)
        drift = positions[order] - np.outer(dist[order] - dist[order][0], normal) - positions[order][0]
        worst = int(np.argmax(np.linalg.norm(drift, axis=1)))
        if np.linalg.norm(drift[worst]) > max(STACK_TOL_MM, SPACING_RTOL * spacing_z):
            raise GeometryError(
                f"{sorted_planes[worst].label} is {np.linalg.norm(drift[worst]):.3f} mm off the stack axis "
                f"of "
                f"{sorted_planes[0].label}: the slices do not stack along their normal (gantry tilt / shear)"
            )
    else:
        spacing_z = float(default_slice_spacing or 1.0)
    row_sp, col_sp = (float(v) for v in planes[0].pixel_spacing or (1.0, 1.0))
    first = positions[order[0]]
    return VolumeGeometry(
        order=tuple(int(i) for i in order),
        origin=(float(first[0]), float(first[1]), float(first[2])),
        row_cosine=_unit(iop[:3]),
        column_cosine=_unit(iop[3:]),
        normal=_unit(normal),
        spacing=(float(spacing_z), row_sp, col_sp),
    )

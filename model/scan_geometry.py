"""Acquisition geometry of a synthetic CT study (how the phantom is sampled), in DICOM patient coordinates
(LPS).

Conventions (stated once, used by the phantom generator, the DICOM writer and the label files):

* Patient coordinates are DICOM LPS in mm: +x towards the patient's left, +y posterior, +z superior (head).
* Voxel arrays are indexed ``[k, j, i]`` = (slice, row, column), the order of the DICOM series sorted by
  ``InstanceNumber``.
* ``row_dir`` is the first ``ImageOrientationPatient`` triplet (direction of increasing column index ``i``),
  ``col_dir`` the second (increasing row index ``j``), ``slice_dir = row_dir x col_dir`` (increasing ``k``).
* The centre of voxel ``(k, j, i)`` is ``origin + i*dx*row_dir + j*dy*col_dir + k*dz*slice_dir``, where
  ``spacing = (dz, dy, dx)``; ``origin`` is ``ImagePositionPatient`` of slice ``k = 0``.
  ``PixelSpacing`` is ``[dy, dx]`` (row spacing, column spacing); slices are contiguous (``SliceThickness =
  dz``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np


class PatientPosition(str, enum.Enum):
    """DICOM (0018,5100) Patient Position values generated here."""

    HFS = "HFS"
    FFS = "FFS"
    HFP = "HFP"
    FFP = "FFP"


#: Image row/column directions (LPS) of an axial image for each patient position (untilted).
_AXIAL_DIRECTIONS: dict[PatientPosition, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    PatientPosition.HFS: ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    PatientPosition.FFS: ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    PatientPosition.HFP: ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    PatientPosition.FFP: ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
}


@dataclass(frozen=True)
class ScanGeometry:
    """Sampling grid of one CT series. ``shape``/``spacing`` are (slices, rows, columns) / (dz, dy, dx) in
    mm."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    row_dir: tuple[float, float, float]
    col_dir: tuple[float, float, float]
    patient_position: PatientPosition = PatientPosition.HFS

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"shape must be 3 positive ints (slices, rows, cols), got {self.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be 3 positive mm values (dz, dy, dx), got {self.spacing}")
        r, c = np.asarray(self.row_dir), np.asarray(self.col_dir)
        if abs(np.linalg.norm(r) - 1) > 1e-6 or abs(np.linalg.norm(c) - 1) > 1e-6 or abs(r @ c) > 1e-6:
            raise ValueError(f"row_dir {self.row_dir} and col_dir {self.col_dir} must be orthonormal")

    @property
    def slice_dir(self) -> tuple[float, float, float]:
        s = np.cross(self.row_dir, self.col_dir)
        return (float(s[0]), float(s[1]), float(s[2]))

    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping (i, j, k, 1) = (column, row, slice) to LPS mm (voxel centres)."""
        dz, dy, dx = self.spacing
        a = np.eye(4)
        a[:3, 0] = np.asarray(self.row_dir) * dx
        a[:3, 1] = np.asarray(self.col_dir) * dy
        a[:3, 2] = np.asarray(self.slice_dir) * dz
        a[:3, 3] = self.origin
        return a

    def affine_ras(self) -> np.ndarray:
        """4x4 matrix mapping (i, j, k, 1) to RAS mm: the NIfTI affine of an array stored as ``[i, j, k]``."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()

    def slice_position(self, k: int) -> tuple[float, float, float]:
        """ImagePositionPatient (LPS mm, centre of the first voxel) of slice ``k``."""
        p = np.asarray(self.origin) + k * self.spacing[0] * np.asarray(self.slice_dir)
        return (float(p[0]), float(p[1]), float(p[2]))

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0


def centred_geometry(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    centre: tuple[float, float, float],
    patient_position: PatientPosition = PatientPosition.HFS,
    tilt_deg: float = 0.0,
) -> ScanGeometry:
    """A geometry whose voxel grid is centred on ``centre`` (LPS mm).

    ``tilt_deg`` rotates the image plane about the patient's left-right axis (an oblique axial acquisition).
    """
    row, col = (np.asarray(v, dtype=float) for v in _AXIAL_DIRECTIONS[PatientPosition(patient_position)])
    t = math.radians(tilt_deg)
    rot = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    row, col = rot @ row, rot @ col
    sl = np.cross(row, col)
    dz, dy, dx = spacing
    nz, ny, nx = shape
    origin = (
        np.asarray(centre, dtype=float)
        - row * dx * (nx - 1) / 2
        - col * dy * (ny - 1) / 2
        - sl * dz * (nz - 1) / 2
    )
    return ScanGeometry(
        shape=(int(nz), int(ny), int(nx)),
        spacing=(float(dz), float(dy), float(dx)),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        row_dir=(float(row[0]), float(row[1]), float(row[2])),
        col_dir=(float(col[0]), float(col[1]), float(col[2])),
        patient_position=PatientPosition(patient_position),
    )

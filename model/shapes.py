"""Implicit shape primitives for the phantom renderer, evaluated on blocks of coordinates (mm).

Every shape returns an *approximate signed distance* in mm (negative inside). The renderer turns distances
into partial-volume occupancies with :func:`occupancy`, so boundaries are anti-aliased at the voxel size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]


def occupancy(dist_mm: np.ndarray, ramp_mm: float) -> np.ndarray:
    """Fraction of a voxel inside a surface at signed distance ``dist_mm`` (linear ramp ``ramp_mm`` wide)."""
    return np.clip(0.5 - dist_mm / ramp_mm, 0.0, 1.0, dtype=np.float32)


@dataclass(frozen=True)
class Waves:
    """A smooth random field: sum of sinusoids ``amp * sin(k . p + phase)`` (k in rad/mm)."""

    k: np.ndarray  # (n, 3)
    amp: np.ndarray  # (n,)
    phase: np.ndarray  # (n,)

    @staticmethod
    def random(rng: np.random.Generator, n: int, wavelength_mm: tuple[float, float], amp: float) -> Waves:
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength_mm, size=n)
        return Waves(
            k=direction * (2 * np.pi / lam)[:, None],
            amp=rng.uniform(0.5, 1.0, n) * amp / np.sqrt(n),
            phase=rng.uniform(0, 2 * np.pi, n),
        )

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=np.float32)
        for (kx, ky, kz), a, ph in zip(self.k, self.amp, self.phase, strict=True):
            out += np.float32(a) * np.sin(
                np.float32(kx) * x + np.float32(ky) * y + np.float32(kz) * z + np.float32(ph)
            )
        return out


@dataclass(frozen=True)
class Blob:
    """A deformed, optionally bent ellipsoid.

    ``axes`` rows are the local unit axes (LPS), ``radii`` the semi-axes along them (mm). ``bend`` bends the
    shape along local axis 1 (positive: concave towards +axis 1, a crescent). ``deform`` modulates the radius
    (relative amplitude, evaluated in normalised local coordinates).
    """

    center: np.ndarray
    axes: np.ndarray
    radii: np.ndarray
    bend: float = 0.0
    deform: Waves | None = None

    @property
    def extent(self) -> float:
        """Radius of a sphere around ``center`` that contains the shape."""
        return float(self.radii.max() * (1.25 + abs(self.bend)))

    def distance(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        c = self.center.astype(np.float32)
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        ax = self.axes.astype(np.float32)
        r = self.radii.astype(np.float32)
        n0 = (ax[0, 0] * dx + ax[0, 1] * dy + ax[0, 2] * dz) / r[0]
        n1 = (ax[1, 0] * dx + ax[1, 1] * dy + ax[1, 2] * dz) / r[1]
        n2 = (ax[2, 0] * dx + ax[2, 1] * dy + ax[2, 2] * dz) / r[2]
        if self.bend:
            n1 = n1 + np.float32(self.bend) * (n0 * n0 + n2 * n2)
        rho = np.sqrt(n0 * n0 + n1 * n1 + n2 * n2)
        target: float | np.ndarray = 1.0
        if self.deform is not None:
            target = 1.0 + self.deform(n0, n1, n2)
        # gradient magnitude of rho w.r.t. mm (ellipsoid part) converts the level-set value to a distance
        g = np.sqrt((n0 / r[0]) ** 2 + (n1 / r[1]) ** 2 + (n2 / r[2]) ** 2) / np.maximum(rho, 1e-3)
        return (rho - target) / np.maximum(g, 1e-3)


def orthonormal_axes(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Rows: unit ``primary``, the part of ``secondary`` orthogonal to it, and their cross product."""
    a0 = primary / np.linalg.norm(primary)
    a1 = secondary - (secondary @ a0) * a0
    a1 /= np.linalg.norm(a1)
    return np.stack([a0, a1, np.cross(a0, a1)])


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation matrix by a random angle in [0, max_deg] about a random axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    t = np.radians(rng.uniform(0, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)

"""Draw an :class:`~model.anatomy.Anatomy` on a :class:`~model.scan_geometry.ScanGeometry` grid.

Partial volume: in-plane, every boundary is a linear ramp one pixel wide; along z, each slice is the mean of
``ceil(thickness / 1.25 mm)`` thin sub-slices, so thick slices blur exactly like a real slab. The spleen
fraction of every voxel is tracked through the same compositing, so the label is aligned with the image by
construction. Acquisition effects (reconstruction blur, correlated noise) are applied afterwards by
:func:`acquire`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from model.anatomy import Anatomy, Layer
from model.scan_geometry import ScanGeometry
from model.shapes import Blob, occupancy

logger = logging.getLogger(__name__)

AIR_HU = -1000.0
SUB_SLICE_MM = 1.25
SLAB_SLICES = 8


#: Tissue classes of the optional tissue map (index = value in the map). Domain-randomised training draws a
#: fresh HU for each class per case (model.train_data), so the network cannot rely on one family's contrasts.
TISSUES = (
    "air", "skin", "fat", "muscle", "visceral_fat", "bone_cortex", "bone_cancellous", "spinal_canal",
    "lung", "rib", "liver", "spleen", "kidney", "stomach_wall", "stomach_content", "gas", "pancreas",
    "bowel_wall", "bowel_fluid", "bowel_soft", "aorta", "ivc",
)  # fmt: skip
_T = {name: i for i, name in enumerate(TISSUES)}


def tissue_of_layer(name: str, hu: float) -> int:
    """Tissue class of an anatomy layer (by name; bowel contents by their HU)."""
    base = name.rstrip("0123456789")
    if name.startswith("bowel") or name.startswith("bed"):
        if name.endswith("_wall"):
            return _T["bowel_wall"]
        return _T["gas"] if hu <= -900 else (_T["bowel_fluid"] if hu < 20 else _T["bowel_soft"])
    if name.startswith("kidney"):
        return _T["kidney"]
    if name.startswith("liver"):
        return _T["liver"]
    if name.startswith("spleen"):
        return _T["spleen"]
    if base == "stomach":
        return _T["stomach_content"]
    return _T[base]


@dataclass
class RenderResult:
    """Noise-free HU image and spleen fraction, both ``[slice, row, col]`` float32; ``tissue`` (uint8,
    :data:`TISSUES` indices, the majority class of the central sub-slice) when asked for."""

    hu: np.ndarray
    spleen_fraction: np.ndarray
    tissue: np.ndarray | None = None


def _fine_geometry(geom: ScanGeometry, nsub: int) -> ScanGeometry:
    dz, dy, dx = geom.spacing
    shift = -(dz / 2 - dz / (2 * nsub)) * np.asarray(geom.slice_dir)
    ox, oy, oz = (float(v) for v in np.asarray(geom.origin) + shift)
    return replace(
        geom,
        shape=(geom.shape[0] * nsub, geom.shape[1], geom.shape[2]),
        spacing=(dz / nsub, dy, dx),
        origin=(ox, oy, oz),
    )


def _coords(geom: ScanGeometry, k0: int, k1: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical anatomy coordinates (LPS mm / scale) of fine slices k0..k1-1."""
    a = geom.affine_lps() / scale
    k = np.arange(k0, k1, dtype=np.float32)[:, None, None]
    j = np.arange(geom.shape[1], dtype=np.float32)[None, :, None]
    i = np.arange(geom.shape[2], dtype=np.float32)[None, None, :]
    out = []
    for axis in range(3):
        row = a[axis].astype(np.float32)
        out.append(row[0] * i + row[1] * j + row[2] * k + row[3])
    return out[0], out[1], out[2]


def _index_box(
    inv: np.ndarray, centre: np.ndarray, extent: float, scale: float, shape: tuple[int, int, int]
) -> tuple[slice, slice, slice] | None:
    """Index-space bounding box [k, j, i] of a sphere (canonical centre/extent) on the grid, or None if
    outside."""
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    pts = (centre[None, :] + corners * extent) * scale
    idx = (inv[:3, :3] @ pts.T + inv[:3, 3:4]).T  # columns: i, j, k
    lo = np.floor(idx.min(axis=0)).astype(int) - 1
    hi = np.ceil(idx.max(axis=0)).astype(int) + 2
    box = []
    for axis, n in ((2, shape[0]), (1, shape[1]), (0, shape[2])):
        a, b = max(lo[axis], 0), min(hi[axis], n)
        if a >= b:
            return None
        box.append(slice(a, b))
    return box[0], box[1], box[2]


class _Canvas:
    """One slab being painted: HU, spleen fraction, cavity occupancy and coordinates."""

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, ramp: float) -> None:
        self.x, self.y, self.z, self.ramp = x, y, z, ramp
        self.hu = np.full(x.shape, AIR_HU, dtype=np.float32)
        self.spleen = np.zeros(x.shape, dtype=np.float32)
        self.cavity = np.zeros(x.shape, dtype=np.float32)
        self.body = np.zeros(x.shape, dtype=np.float32)
        self.wall_distance = np.zeros(x.shape, dtype=np.float32)
        self.tissue = np.zeros(x.shape, dtype=np.uint8)

    def paint(
        self,
        alpha: np.ndarray,
        hu: np.ndarray | float,
        box: tuple[slice, ...] = (),
        spleen: bool = False,
        tissue: int | np.ndarray = 0,
    ) -> None:
        region = self.hu[box] if box else self.hu
        region += alpha * (hu - region)
        tis = self.tissue[box] if box else self.tissue
        np.copyto(tis, np.asarray(tissue, dtype=np.uint8), where=alpha >= 0.5)
        sp = self.spleen[box] if box else self.spleen
        if spleen:
            sp += alpha * (1.0 - sp)
        else:
            sp *= 1.0 - alpha


def _paint_body(c: _Canvas, anat: Anatomy) -> None:
    b = anat.body
    zc = np.zeros_like(c.z[:, :1, :1])
    wave = 1.0 + b.waist(zc, zc, c.z[:, :1, :1])
    a, d_ant, d_post = b.half_width * wave, b.half_depth_ant * wave, b.half_depth_post * wave
    x, y = c.x, c.y
    yy = np.where(y < 0, y / d_ant, y / d_post)
    rho = np.sqrt((x / a) ** 2 + yy * yy)
    r = np.sqrt(x * x + y * y) / np.maximum(rho, 1e-3)
    d_body = (rho - 1.0) * r
    fat = b.fat_post + (b.fat_ant - b.fat_post) * np.clip((d_post - y) / (d_post + d_ant), 0, 1)
    c.body = occupancy(d_body, c.ramp)
    c.paint(c.body, b.hu_skin, tissue=_T["skin"])
    c.paint(occupancy(d_body + 2.0, c.ramp), b.hu_fat, tissue=_T["fat"])
    c.paint(occupancy(d_body + fat, c.ramp), b.hu_muscle, tissue=_T["muscle"])
    c.cavity = occupancy(d_body + fat + b.muscle, c.ramp)
    c.paint(c.cavity, b.hu_visceral_fat, tissue=_T["visceral_fat"])
    c.wall_distance = d_body + fat + b.muscle * 0.5


def _paint_layer(c: _Canvas, layer: Layer, anat: Anatomy, inv: np.ndarray, hu_fill: float) -> None:
    k, j, i = (int(n) for n in np.asarray(c.hu).shape[:3])
    box = _index_box(inv, layer.shape.center, layer.shape.extent, anat.scale, (k, j, i))
    if box is None:
        return
    x, y, z = c.x[box], c.y[box], c.z[box]
    alpha = occupancy(layer.shape.distance(x, y, z), c.ramp) * c.cavity[box]
    if not alpha.any():
        return
    if layer.carve_spleen:
        sp = c.spleen[box]
        removed = alpha * sp
        c.hu[box] += removed * (hu_fill - c.hu[box])
        sp -= removed
        np.copyto(c.tissue[box], np.uint8(_T["visceral_fat"]), where=(removed >= 0.5))
        return
    hu: np.ndarray | float = layer.hu
    tissue: int | np.ndarray = tissue_of_layer(layer.name, layer.hu)
    if layer.texture is not None:
        hu = layer.hu + layer.texture(x, y, z)
    if layer.gas_below_y is not None:
        hu = np.where(y < layer.gas_below_y, AIR_HU, hu)
        tissue = np.where(y < layer.gas_below_y, _T["gas"], tissue)
    c.paint(alpha, hu, box, spleen=layer.is_spleen, tissue=tissue)


def _paint_spine(c: _Canvas, anat: Anatomy, inv: np.ndarray) -> None:
    s, m = anat.spine, anat.body.hu_muscle
    r = s.body_radius
    axes = np.eye(3)[[2, 0, 1]]
    canal_y = s.centre_y + r + 9.0

    def tube(cx: float, cy: float, rx: float, ry: float) -> Blob:
        return Blob(center=np.array([cx, cy, 0.0]), axes=axes, radii=np.array([5000.0, rx, ry]))

    disc = np.mod(c.z - s.disc_phase, s.disc_period) < 7.0
    mu, co, ca = _T["muscle"], _T["bone_cortex"], _T["bone_cancellous"]
    parts: list[tuple[Blob, Callable[[], np.ndarray | float], int]] = [
        (tube(-38, canal_y + 12, 22, 28), lambda: m, mu),
        (tube(38, canal_y + 12, 22, 28), lambda: m, mu),
        (tube(-(r + 22), s.centre_y - 5, 14, 17), lambda: m, mu),
        (tube(r + 22, s.centre_y - 5, 14, 17), lambda: m, mu),
        (tube(0, canal_y + 22, 5, 22), lambda: s.hu_cortex, co),
        (tube(0, canal_y, 15, 14), lambda: s.hu_cortex, co),
        (tube(0, canal_y, 9, 8), lambda: 15.0, _T["spinal_canal"]),
        (tube(0, s.centre_y, r, r * 0.85), lambda: s.hu_cortex, co),
        (
            tube(0, s.centre_y, r - 2.5, r * 0.85 - 2.5),
            lambda: np.where(disc, s.hu_disc, s.hu_cancellous),
            ca,
        ),
    ]
    for shape, hu, tissue in parts:
        alpha = occupancy(shape.distance(c.x, c.y, c.z), c.ramp) * c.body
        c.paint(alpha, hu(), tissue=tissue)


def _paint_thorax(c: _Canvas, anat: Anatomy, inv: np.ndarray) -> None:
    t, w = anat.thorax, anat.body.half_width
    x, y, z = c.x, c.y, c.z
    dome_z = np.where(x > 0, t.dome_left_z, t.dome_right_z)
    dome = dome_z - t.dome_curvature * ((np.abs(x) - 0.45 * w) ** 2 + (y - 10.0) ** 2)
    if (z > dome.min() - 5).any():
        lung = occupancy(dome - z, c.ramp) * c.cavity
        mediastinum = occupancy(np.sqrt((x - 10.0) ** 2 + np.maximum(-y - 10.0, 0) ** 2 / 4) - 70.0, c.ramp)
        c.paint(lung * (1 - mediastinum), t.hu_lung, tissue=_T["lung"])
    near = (np.abs(c.wall_distance) < t.rib_radius + 3) & (z > t.rib_bottom_z)
    if not near.any():
        return
    theta = np.arctan2(y[near], x[near])
    lift = t.rib_slope * (1 - np.sin(theta))
    phase = np.mod(z[near] - lift - t.rib_phase, t.rib_period)
    dz = np.minimum(phase, t.rib_period - phase)
    d = np.sqrt(c.wall_distance[near] ** 2 + dz * dz) - t.rib_radius
    keep = (np.abs(theta + np.pi / 2) > 0.6) & (z[near] > t.rib_bottom_z + 25 * (1 - np.sin(theta)))
    alpha = occupancy(d, c.ramp) * keep
    sub = np.zeros_like(c.hu)
    sub[near] = alpha
    c.paint(sub, t.hu_rib, tissue=_T["rib"])


def render(
    anat: Anatomy,
    geom: ScanGeometry,
    progress: Callable[[int], None] | None = None,
    with_tissue: bool = False,
) -> RenderResult:
    """Noise-free HU volume and spleen fraction of ``anat`` sampled on ``geom`` (``[slice, row, col]``);
    ``with_tissue`` also returns the tissue-class map (for domain-randomised training data)."""
    nsub = max(1, math.ceil(geom.spacing[0] / SUB_SLICE_MM - 1e-6))
    fine = _fine_geometry(geom, nsub)
    inv = np.linalg.inv(fine.affine_lps())
    ramp = max(geom.spacing[1], geom.spacing[2]) / anat.scale
    hu_out = np.empty(geom.shape, dtype=np.float32)
    sp_out = np.empty(geom.shape, dtype=np.float32)
    tissue_out = np.empty(geom.shape, dtype=np.uint8) if with_tissue else None
    fill = anat.body.hu_visceral_fat
    for s0 in range(0, geom.shape[0], SLAB_SLICES):
        s1 = min(s0 + SLAB_SLICES, geom.shape[0])
        c = _Canvas(*_coords(fine, s0 * nsub, s1 * nsub, anat.scale), ramp=ramp)
        slab_inv = inv.copy()
        slab_inv[2, 3] -= s0 * nsub  # index boxes relative to the slab
        _paint_body(c, anat)
        _paint_spine(c, anat, slab_inv)
        for layer in anat.layers:
            _paint_layer(c, layer, anat, slab_inv, fill)
        _paint_thorax(c, anat, slab_inv)
        hu_out[s0:s1] = c.hu.reshape(s1 - s0, nsub, *c.hu.shape[1:]).mean(axis=1)
        sp_out[s0:s1] = c.spleen.reshape(s1 - s0, nsub, *c.hu.shape[1:]).mean(axis=1)
        if tissue_out is not None:
            tissue_out[s0:s1] = c.tissue.reshape(s1 - s0, nsub, *c.hu.shape[1:])[:, nsub // 2]
        if progress is not None:
            progress(s1 - s0)
    return RenderResult(hu=hu_out, spleen_fraction=sp_out, tissue=tissue_out)


def acquire(hu: np.ndarray, rng: np.random.Generator, noise_hu: float, blur_px: float) -> np.ndarray:
    """Reconstruction blur (in-plane Gaussian) and correlated quantum noise, in place where possible."""
    out = ndimage.gaussian_filter(hu, sigma=(0, blur_px, blur_px)) if blur_px > 0 else hu
    for k in range(out.shape[0]):  # slice by slice keeps memory flat for 512x512x300 studies
        noise = rng.standard_normal(out.shape[1:], dtype=np.float32)
        noise = ndimage.gaussian_filter(noise, 0.7) * np.float32(noise_hu / 0.4)
        out[k] += noise
    return out

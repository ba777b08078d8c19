"""An independent family of abdominal CT phantoms, for evaluation only (never for training or calibration).

Written without :mod:`model.anatomy`, :mod:`model.render` or :mod:`model.shapes`: other organ models, other
layout rules, another intensity and noise model, so a network that only learned the training generator's
habits is caught out. What it shares with real anatomy (and with the training family) is only what must hold
for any abdomen:

* **Body**: a superellipse cross-section (exponent 2.2-3.2) whose axes taper with z; subcutaneous fat and a
  muscle wall of their own thickness; ribs as tilted tori (hoops) in the wall above the costal margin.
* **Layout rules** are polar, from the inner wall: the spleen sits at an angle of 95-130 degrees from the
  anterior midline towards the patient's left (postero-lateral in the left upper quadrant), its convex face
  against the wall and ribs; the left kidney is postero-medial to it (beside the spine, its upper pole at the
  spleen's lower half); the stomach is antero-medial (a bent tube from the fundus to the antrum, with a fluid,
  air-fluid or food content); visceral fat fills what is left, so organs are separated by fat of random width.
  The liver fills the right upper quadrant below the right dome (a wall-clipped ellipsoid with an optional
  left lobe anterior to the stomach); aorta and IVC in front of a rounded-square vertebral body; bowel as
  tubes along random walks; the pancreatic tail runs from the hilum towards the midline.
* **Spleen model**: constructive solid geometry, a convex ellipsoid minus a larger one displaced towards the
  hilum (the concave visceral face), perturbed by a trilinear random displacement field (lobulation).
* **Intensity model**: tissue means drawn from per-phase normal distributions (native, arterial, portal,
  delayed), multiplicative multi-octave texture, heterogeneous arterial spleen; noise with a CT-like
  ramp-Gaussian noise power spectrum whose level follows the body's width slice by slice (photon starvation);
  in-plane PSF by FFT; thick slices averaged from sub-slices of at most 2 mm.

Deterministic per seed: :func:`generate_independent` with the same seed and arguments returns the same arrays.
It returns a :class:`model.phantoms.Phantom`, so it is written and evaluated with the same I/O as the training
family. ``spleen=False`` removes the spleen (splenectomy: bowel moves into the bed); ``fov="below_spleen"``
images the abdomen below the spleen; both give an empty label.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from model.phantoms import MAX_STORED, RESCALE_INTERCEPT, RESCALE_SLOPE, Phantom
from model.scan_geometry import PatientPosition, centred_geometry

logger = logging.getLogger(__name__)

PHASES = ("native", "arterial", "portal", "delayed")
#: (mean, sd) HU per tissue and phase.
_HU = {
    "spleen": {"native": (48, 5), "arterial": (120, 18), "portal": (125, 12), "delayed": (95, 10)},
    "liver": {"native": (58, 6), "arterial": (80, 10), "portal": (118, 12), "delayed": (90, 8)},
    "kidney": {"native": (33, 4), "arterial": (200, 30), "portal": (165, 20), "delayed": (120, 20)},
    "vessel": {"native": (42, 4), "arterial": (300, 40), "portal": (160, 20), "delayed": (110, 12)},
    "pancreas": {"native": (42, 5), "arterial": (110, 12), "portal": (95, 10), "delayed": (75, 8)},
    "muscle": {"native": (48, 4), "arterial": (55, 5), "portal": (60, 5), "delayed": (58, 5)},
    "gut_wall": {"native": (38, 5), "arterial": (80, 12), "portal": (75, 10), "delayed": (65, 8)},
}


def _n(rng: np.random.Generator, tissue: str, phase: str) -> float:
    m, s = _HU[tissue][phase]
    return float(rng.normal(m, s))


@dataclass(frozen=True)
class _Ellipsoid:
    c: np.ndarray  # centre (LPS mm)
    r: np.ndarray  # semi-axes
    rot: np.ndarray  # rows: local axes

    def level(self, p: np.ndarray) -> np.ndarray:
        """(|local/r|^2) - 1 for points ``p`` (..., 3): negative inside."""
        q = (p - self.c) @ self.rot.T / self.r
        return np.einsum("...i,...i->...", q, q) - 1.0


def _rot(rng: np.random.Generator, deg: float) -> np.ndarray:
    a = np.radians(rng.uniform(-deg, deg, 3))
    cx, sx, cy, sy, cz, sz = (
        np.cos(a[0]),
        np.sin(a[0]),
        np.cos(a[1]),
        np.sin(a[1]),
        np.cos(a[2]),
        np.sin(a[2]),
    )
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


class _Field:
    """Trilinear random field on a coarse lattice over a box (unit-ish amplitude)."""

    def __init__(self, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, cells: int) -> None:
        self.lo, self.span = lo, np.maximum(hi - lo, 1e-3)
        self.grid = ndimage.gaussian_filter(rng.standard_normal((cells + 3,) * 3), 0.6).astype(np.float32)
        self.grid /= float(self.grid.std()) or 1.0
        self.cells = cells

    def __call__(self, p: np.ndarray) -> np.ndarray:
        u = (p - self.lo) / self.span * self.cells + 1.0
        flat = u.reshape(-1, 3).T
        out = ndimage.map_coordinates(self.grid, flat, order=1, mode="nearest")
        return out.reshape(p.shape[:-1])


@dataclass
class _Tube:
    """Points of a centreline with a radius: distance-to-polyline minus radius (mm)."""

    pts: np.ndarray  # (n, 3)
    radius: np.ndarray  # (n,)

    def distance(self, p: np.ndarray) -> np.ndarray:
        best = np.full(p.shape[:-1], np.inf, dtype=np.float32)
        for a, b, ra, rb in zip(self.pts[:-1], self.pts[1:], self.radius[:-1], self.radius[1:], strict=True):
            ab = b - a
            t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-6), 0, 1)
            d = np.linalg.norm(p - (a + t[..., None] * ab), axis=-1) - (ra + t * (rb - ra))
            np.minimum(best, d, out=best)
        return best

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        r = float(self.radius.max())
        return self.pts.min(0) - r, self.pts.max(0) + r


def _walk(
    rng: np.random.Generator, start: np.ndarray, n: int, step: float, box: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    pts, d = [start], rng.normal(size=3)
    for _ in range(n):
        d = d / np.linalg.norm(d) + rng.normal(size=3) * 0.6
        d /= np.linalg.norm(d)
        nxt = np.clip(pts[-1] + d * step, box[0], box[1])
        pts.append(nxt)
    return np.array(pts)


class IndependentAnatomy:
    """One patient of the independent family (all parameters drawn in ``__init__``)."""

    def __init__(self, rng: np.random.Generator, spleen: bool = True) -> None:
        u = rng.uniform
        self.phase = str(rng.choice(PHASES, p=[0.25, 0.2, 0.4, 0.15]))
        ph = self.phase
        self.a0, self.b0 = u(135, 200), u(100, 145)  # body half width / half depth at z = 0
        self.taper = u(-0.0015, 0.001)  # relative change of the axes per mm of z
        self.p = u(2.2, 3.2)
        self.y0 = u(-8, 8)
        self.fat = (u(5, 45), u(5, 30))  # anterior/lateral, posterior subcutaneous fat
        self.wall = u(7, 14)
        self.hu_fat, self.hu_vfat = float(rng.normal(-100, 8)), float(rng.normal(-92, 10))
        self.hu_muscle = _n(rng, "muscle", ph)
        self.hu_skin = float(rng.normal(20, 8))
        # spine: rounded square vertebral body
        self.spine_y = self.b0 - self.fat[1] - self.wall - u(40, 55)
        self.vb = u(15, 21)
        self.hu_bone, self.hu_cortex = float(rng.normal(210, 40)), float(rng.normal(650, 120))
        # diaphragm domes (paraboloids), lung above
        self.dome_l, self.dome_r, self.dome_k = (
            u(10, 30),
            u(25, 55),
            u(0.0012, 0.0028),
        )  # above the spleen top
        self.hu_lung = float(rng.normal(-840, 30))
        # ribs: hoops, period along z
        self.rib_period, self.rib_r, self.rib_tilt = u(26, 36), u(3.5, 5.5), u(0.5, 1.0)
        self.rib_phase, self.costal_z = u(0, 30), u(-110, -70)
        self.hu_rib = float(rng.normal(500, 100))
        # (name, level fn(p) -> ~mm, negative inside, hu, texture amplitude %, fat rim mm, bounding box LPS)
        self.organs: list[tuple[str, Any, float, float, float, tuple[np.ndarray, np.ndarray]]] = []
        self._spleen_parts: list[Any] = []
        self.has_spleen = spleen
        self._layout(rng, spleen)

    # body and wall -----------------------------------------------------------------------------------
    def axes_at(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = 1.0 + self.taper * z
        return self.a0 * f, self.b0 * f

    def body_level(self, p: np.ndarray, inset: float | np.ndarray = 0.0) -> np.ndarray:
        """Approximate signed distance (mm) to the body outline moved inwards by ``inset``."""
        a, b = self.axes_at(p[..., 2])
        a, b = a - inset, b - inset
        x, y = np.abs(p[..., 0]) / a, np.abs(p[..., 1] - self.y0) / b
        rho = (x**self.p + y**self.p) ** (1.0 / self.p)
        return (rho - 1.0) * np.minimum(a, b)

    def inner_point(self, theta_deg: float, z: float, depth: float) -> np.ndarray:
        """Point ``depth`` mm inside the inner muscle wall at polar angle theta (0 = anterior, 90 = left)."""
        t = math.radians(theta_deg)
        d = np.array([math.sin(t), -math.cos(t)])
        ax, bx = self.axes_at(np.asarray(z))
        inset = self.fat[0 if d[1] < 0 else 1] + self.wall
        a, b = float(ax) - inset, float(bx) - inset
        r = 1.0 / ((abs(d[0]) / a) ** self.p + (abs(d[1]) / b) ** self.p) ** (1.0 / self.p)
        q = d * (r - depth)
        return np.array([q[0], q[1] + self.y0, z])

    # organs --------------------------------------------------------------------------------------------
    def _layout(self, rng: np.random.Generator, spleen: bool) -> None:
        u, ph = rng.uniform, self.phase
        zs = u(-10, 20)  # spleen centre level
        self.spleen_z = zs
        volume = float(np.exp(u(np.log(60), np.log(600))))
        # convex ellipsoid with axes long : wide : thick ~ 1 : 0.6 : 0.35
        k = (volume * 1000 * 3 / (4 * np.pi * 0.6 * 0.35 * 1.25)) ** (1 / 3)
        r = np.array([k * u(0.85, 1.1), k * 0.6 * u(0.85, 1.15), k * 0.35 * u(0.85, 1.2)])
        theta = u(95, 130)
        centre = self.inner_point(theta, zs, r[2] * u(0.9, 1.3) + u(0, 6))
        t = math.radians(theta)
        outward = np.array([math.sin(t), -math.cos(t), 0.0])
        long_ax = np.array(
            [-outward[1] * 0.4, outward[0] * 0.4 + u(-0.6, -0.3), 1.0]
        )  # posterior-superior tip
        long_ax /= np.linalg.norm(long_ax)
        thick = outward - (outward @ long_ax) * long_ax
        thick /= np.linalg.norm(thick)
        rot = np.stack([long_ax, np.cross(thick, long_ax), thick])
        convex = _Ellipsoid(centre, r, rot)
        hollow = _Ellipsoid(centre - thick * r[2] * u(1.3, 1.8), r * np.array([1.3, 1.1, 1.25]), rot)
        lob = _Field(rng, centre - r.max() * 1.4, centre + r.max() * 1.4, int(rng.integers(3, 7)))
        lob_amp = u(0.03, 0.12)

        def spleen_level(p: np.ndarray) -> np.ndarray:
            return np.maximum(convex.level(p) + lob_amp * lob(p), -hollow.level(p))

        self.spleen_bbox = (centre - r.max() * 1.5, centre + r.max() * 1.5)
        self.spleen_top = float(centre[2] + r[0] * 0.8)
        self.spleen_centre = centre
        self.hilum = centre - thick * r[2] * 1.1
        hu_spleen = _n(rng, "spleen", ph)
        self.spleen_hetero = ph == "arterial" and rng.random() < 0.7
        # left kidney: postero-medial to the spleen, upper pole at the spleen's lower half
        kidneys = []
        for side in (1, -1):
            kx = side * (self.vb + u(30, 42))
            if side > 0:
                kx = min(kx, float(centre[0]) - 15)  # the left kidney stays medial to the spleen
            kc = np.array([kx, self.spine_y + u(-12, 5), zs - r[0] * u(0.5, 0.9) - u(20, 40)])
            kidneys.append(
                _Ellipsoid(
                    kc, np.array([u(24, 32), u(20, 26), u(48, 62)]) * np.array([1, 1, 1]), _rot(rng, 15)
                )
            )
        hu_kidney = _n(rng, "kidney", ph)
        self.kidney_left_centre = kidneys[0].c
        # stomach: bent tube, fundus near the spleen's upper pole (antero-medial), antrum to the right
        f0 = centre + np.array([-u(45, 70), -u(35, 60), u(10, 30)])
        pts = np.array(
            [f0, f0 + [-u(20, 40), -u(15, 30), -u(30, 50)], f0 + [-u(70, 110), -u(25, 45), -u(55, 85)]]
        )
        stomach = _Tube(pts, np.array([u(28, 42), u(22, 34), u(12, 20)]))
        self.stomach_fundus = f0
        st_content = str(rng.choice(["fluid", "airfluid", "food"], p=[0.3, 0.45, 0.25]))
        # liver: right upper quadrant below the right dome, clipped by the wall
        lc = np.array([-self.a0 * u(0.35, 0.5), u(-20, 10), zs + u(-5, 25)])
        liver = _Ellipsoid(lc, np.array([u(75, 95), u(70, 95), u(65, 85)]), _rot(rng, 10))
        left_lobe = None
        if rng.random() < 0.6:
            tip = centre + np.array([-u(40, 70), -u(55, 85), u(5, 25)])
            left_lobe = _Tube(np.array([lc + [30, -30, 10], tip]), np.array([u(30, 40), u(8, 14)]))
        hu_liver = _n(rng, "liver", ph)
        # pancreas tail from the hilum towards the midline; vessels in front of the spine
        panc = _Tube(
            np.array([self.hilum + [-5, -10, -15], [u(-10, 10), self.spine_y - u(45, 60), zs - u(25, 40)]]),
            np.array([u(9, 13), u(11, 16)]),
        )
        aorta = _Tube(
            np.array([[u(-5, 15), self.spine_y - self.vb - 14, z] for z in (-400, 400)]),
            np.full(2, u(10, 13)),
        )
        ivc = _Tube(
            np.array([[-u(22, 35), self.spine_y - self.vb - 16, z] for z in (-400, 400)]),
            np.full(2, u(9, 12)),
        )
        # bowel: random-walk tubes in the lower/anterior abdomen, the splenic flexure below the spleen
        box = (
            np.array([-self.a0 * 0.75, -self.b0 * 0.75, zs - 320]),
            np.array([self.a0 * 0.75, self.b0 * 0.2, zs - 40]),
        )
        loops = []
        for n in range(int(rng.integers(6, 14))):
            start = rng.uniform(box[0], box[1])
            if n == 0:
                start = centre + np.array([-u(0, 20), -u(30, 55), -r[0] * u(0.8, 1.2)])
            pts = _walk(rng, start, int(rng.integers(4, 9)), u(25, 45), box)
            loops.append((_Tube(pts, np.full(len(pts), u(9, 20))), n))
        organs: list[tuple[str, Any, float, float, float, tuple[np.ndarray, np.ndarray]]] = []
        for tube, n in loops:
            content = float(rng.choice([-1000.0, float(rng.normal(15, 8)), float(rng.normal(40, 10))]))
            inner = _Tube(tube.pts, tube.radius - u(1.5, 3))
            organs += [
                (f"bowel{n}_wall", tube.distance, _n(rng, "gut_wall", ph), 4.0, u(1, 4), tube.bbox()),
                (f"bowel{n}", inner.distance, content, 6.0, 0.0, tube.bbox()),
            ]
        if not spleen:  # splenectomy: colon and small bowel move up into the splenic bed
            for n in range(int(rng.integers(2, 4))):
                start = centre + rng.normal(size=3) * np.array([10, 15, 25])
                bed_box = (centre - r.max(), centre + r.max())
                tube = _Tube(_walk(rng, start, 3, u(20, 35), bed_box), np.full(4, u(12, 20)))
                content = float(rng.choice([-1000.0, 20.0, 45.0]))
                organs += [
                    (f"bed{n}_wall", tube.distance, _n(rng, "gut_wall", ph), 4.0, u(1, 4), tube.bbox()),
                    (f"bed{n}", _Tube(tube.pts, tube.radius - 2.5).distance, content, 6.0, 0.0, tube.bbox()),
                ]
        hu_gut = _n(rng, "gut_wall", ph)
        inner_st = _Tube(stomach.pts, stomach.radius - u(3, 6))
        gas_y = float(pts[:, 1].min() - u(-10, 15)) if st_content == "airfluid" else None
        st_hu = {
            "fluid": float(rng.normal(12, 6)),
            "airfluid": float(rng.normal(12, 6)),
            "food": float(rng.normal(35, 12)),
        }[st_content]
        self.stomach_gas_y = gas_y
        liver_wall = self.fat[0] + self.wall + 2

        def liver_level(p: np.ndarray) -> np.ndarray:
            return np.maximum(liver.level(p) * 40, self.body_level(p, liver_wall))

        def ebox(e: _Ellipsoid) -> tuple[np.ndarray, np.ndarray]:
            return e.c - e.r.max(), e.c + e.r.max()

        organs.append(("liver", liver_level, hu_liver, 8.0, 0.0, ebox(liver)))
        if left_lobe is not None:
            organs.append(("liver_left", left_lobe.distance, hu_liver, 8.0, 0.0, left_lobe.bbox()))
        st_tex = 10.0 if st_content == "food" else 3.0
        organs += [
            ("stomach_wall", stomach.distance, hu_gut, 4.0, u(2, 7), stomach.bbox()),
            ("stomach", inner_st.distance, st_hu, st_tex, 0.0, stomach.bbox()),
            ("pancreas", panc.distance, _n(rng, "pancreas", ph), 10.0, u(1, 4), panc.bbox()),
            ("kidney_l", lambda p: kidneys[0].level(p) * 25, hu_kidney, 6.0, u(3, 9), ebox(kidneys[0])),
            ("kidney_r", lambda p: kidneys[1].level(p) * 25, hu_kidney, 6.0, u(3, 9), ebox(kidneys[1])),
            ("aorta", aorta.distance, _n(rng, "vessel", ph), 0.0, 2.0, aorta.bbox()),
            ("ivc", ivc.distance, _n(rng, "vessel", ph) * u(0.7, 1.0), 0.0, 2.0, ivc.bbox()),
        ]
        if spleen:
            organs.append(
                ("spleen", lambda p: spleen_level(p) * 30, hu_spleen, 6.0, u(2, 8), self.spleen_bbox)
            )
        self.organs = organs
        self.spleen_radii = r
        self.hu = {"spleen": hu_spleen, "liver": hu_liver, "kidney": hu_kidney, "visceral_fat": self.hu_vfat}


def sample_independent_geometry(rng: np.random.Generator, moderate: bool = True) -> dict[str, Any]:
    """Random acquisition: 320-440 mm field of view, 0.7-1.2 mm pixels (``moderate``: at most 384 px), 1-7 mm
    slices over 150-280 mm, any patient position, tilt in a quarter of the studies."""
    fov = rng.uniform(320, 440)
    px = rng.uniform(0.7, 1.2)
    n = int(round(fov / px))
    if moderate:
        n = min(n, 384)
    dz = float(rng.choice([1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 7.0]))
    nz = int(np.clip(round(rng.uniform(150, 280) / dz), 24, 280))
    position = PatientPosition(str(rng.choice([p.value for p in PatientPosition])))
    tilt = float(rng.uniform(-15, 15)) if rng.random() < 0.25 else 0.0
    return {
        "shape": (nz, n, n),
        "spacing": (dz, fov / n, fov / n),
        "patient_position": position,
        "tilt_deg": tilt,
    }


def _nps_noise(rng: np.random.Generator, shape: tuple[int, int], px: float) -> np.ndarray:
    """Unit-variance noise with a ramp x Gaussian (filtered back projection-like) power spectrum."""
    fy = np.fft.fftfreq(shape[0], px)[:, None]
    fx = np.fft.rfftfreq(shape[1], px)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    fc = rng.uniform(0.25, 0.5)  # cycles/mm
    amp = np.sqrt(f * np.exp(-((f / fc) ** 2)))
    white = np.fft.rfft2(rng.standard_normal(shape))
    out = np.fft.irfft2(white * amp, s=shape)
    return (out / (out.std() or 1.0)).astype(np.float32)


def _psf(img: np.ndarray, px: float, fwhm_mm: float) -> np.ndarray:
    sigma = fwhm_mm / 2.355 / px
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.rfftfreq(img.shape[1])[None, :]
    h = np.exp(-2 * (np.pi * sigma) ** 2 * (fx * fx + fy * fy))
    return np.fft.irfft2(np.fft.rfft2(img) * h, s=img.shape).astype(np.float32)


def _paint_slice(
    anat: IndependentAnatomy, p: np.ndarray, tex: _Field, tex2: _Field
) -> tuple[np.ndarray, np.ndarray]:
    """HU and spleen mask of one (sub-)slice of points ``p`` (rows, cols, 3)."""
    z = p[..., 2]
    d_body = anat.body_level(p)
    hu = np.full(p.shape[:-1], -1000.0, np.float32)
    inside = d_body < 0
    hu[inside] = anat.hu_skin
    fat_in = np.where(p[..., 1] - anat.y0 > 0, anat.fat[1], anat.fat[0])
    hu[anat.body_level(p, 2.0) < 0] = anat.hu_fat
    muscle = anat.body_level(p, fat_in) < 0
    hu[muscle] = anat.hu_muscle
    cavity = anat.body_level(p, fat_in + anat.wall) < 0
    hu[cavity] = anat.hu_vfat
    # lungs above the domes (left and right), inside the cavity
    dome = (
        np.where(p[..., 0] > 0, anat.dome_l, anat.dome_r)
        + anat.spleen_top
        - anat.dome_k * ((np.abs(p[..., 0]) - 0.5 * anat.a0) ** 2 + (p[..., 1] - 10) ** 2)
    )
    heart = ((p[..., 0] - 15) / 70) ** 2 + ((p[..., 1] + 40) / 60) ** 2 < 1
    lung = cavity & (z > dome) & ~heart
    hu[cavity & (z > dome) & heart] = anat.hu_muscle + 5
    hu[lung] = anat.hu_lung
    # spine and paraspinal muscles
    sx, sy = np.abs(p[..., 0]), p[..., 1] - anat.spine_y
    vb = (sx / anat.vb) ** 4 + (sy / (anat.vb * 0.85)) ** 4
    para = ((sx - 40) / 24) ** 2 + ((sy - anat.vb - 25) / 26) ** 2 < 1
    hu[para & inside] = anat.hu_muscle
    hu[vb < 1.0] = anat.hu_cortex
    hu[vb < 0.7] = anat.hu_bone
    canal = (sx / 9) ** 2 + ((sy - anat.vb - 12) / 8) ** 2 < 1
    hu[((sx / 16) ** 2 + ((sy - anat.vb - 12) / 15) ** 2 < 1) & ~canal] = anat.hu_cortex
    hu[canal] = 20.0
    # organs, later over earlier, only in the cavity below the domes
    spleen = np.zeros(p.shape[:-1], bool)
    belly = cavity & ~lung
    o, ei, ej = p[0, 0], p[0, 1] - p[0, 0], p[1, 0] - p[0, 0]
    for name, level, value, amp, margin, (lo, hi) in anat.organs:
        corners = np.array(
            [[x, y, w] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for w in (lo[2], hi[2])]
        )
        ii = (corners - o) @ ei / float(ei @ ei)
        jj = (corners - o) @ ej / float(ej @ ej)
        i0, i1 = max(0, int(ii.min()) - 1), min(p.shape[1], int(ii.max()) + 2)
        j0, j1 = max(0, int(jj.min()) - 1), min(p.shape[0], int(jj.max()) + 2)
        if i0 >= i1 or j0 >= j1:
            continue
        win = (slice(j0, j1), slice(i0, i1))
        pw = p[win]
        if pw[..., 2].max() < lo[2] or pw[..., 2].min() > hi[2]:
            continue
        inside_w = belly[win]
        if not inside_w.any():
            continue
        lev = np.full(inside_w.shape, np.inf, np.float32)
        lev[inside_w] = level(pw[inside_w])
        hu_w, sp_w = hu[win], spleen[win]
        if margin > 0:  # a rim of visceral fat keeps the organ off what was painted before
            rim = lev < margin
            hu_w[rim] = anat.hu_vfat
            sp_w[rim] = False
        m = lev < 0
        if not m.any():
            continue
        v = value * (1 + amp / 100 * tex(pw[m]))
        if name == "spleen" and anat.spleen_hetero:
            v = v + 35 * np.sign(tex2(pw[m]))
        if name == "stomach" and anat.stomach_gas_y is not None:
            v = np.where(pw[m][:, 1] < anat.stomach_gas_y, -1000.0, v)
        hu_w[m] = v
        sp_w[m] = name == "spleen"
    # ribs: hoops in the muscle wall above the costal margin, sloping down anteriorly
    wall_mid = np.abs(anat.body_level(p, fat_in + anat.wall / 2))
    near = (wall_mid < anat.rib_r + 1) & (z > anat.costal_z + anat.spleen_z)
    if near.any():
        theta = np.arctan2(p[..., 0][near], -(p[..., 1][near] - anat.y0))
        zz = z[near] + anat.rib_tilt * 100 * (1 + np.cos(theta)) / 2  # ribs fall ~50-100 mm to the front
        ph = np.mod(zz - anat.rib_phase, anat.rib_period)
        dz = np.minimum(ph, anat.rib_period - ph)
        rib = np.sqrt(wall_mid[near] ** 2 + dz * dz) < anat.rib_r
        rib &= np.abs(theta) > 0.5  # the costal cartilages leave the front open
        vals = hu[near]
        vals[rib] = anat.hu_rib
        hu[near] = vals
        sp = spleen[near]
        sp[rib] = False
        spleen[near] = sp
    return hu, spleen


def generate_independent(
    seed: int,
    shape: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    patient_position: PatientPosition | str | None = None,
    tilt_deg: float | None = None,
    spleen: bool = True,
    fov: str = "spleen",
) -> Phantom:
    """One phantom of the independent family (see the module doc). ``fov``: ``"spleen"`` (the field of view
    contains the spleen) or ``"below_spleen"``."""
    if fov not in ("spleen", "below_spleen"):
        raise ValueError(f"fov must be 'spleen' or 'below_spleen', got {fov!r}")
    rng = np.random.default_rng([seed, 0x1DE9])
    g = sample_independent_geometry(np.random.default_rng([seed, 0x9E0]))
    sz, sy, sx = (int(v) for v in (shape or g["shape"]))
    dz0, dy0, dx0 = (float(v) for v in (spacing or g["spacing"]))
    shp, spc = (sz, sy, sx), (dz0, dy0, dx0)
    position = PatientPosition(patient_position or g["patient_position"])
    tilt = g["tilt_deg"] if tilt_deg is None else float(tilt_deg)
    anat = IndependentAnatomy(rng, spleen=spleen)
    extent_z = sz * dz0
    zc = anat.spleen_z + rng.uniform(-0.25, 0.25) * max(0.0, extent_z - 2 * anat.spleen_radii[0])
    if fov == "below_spleen":
        zc = anat.spleen_z - anat.spleen_radii[0] * 1.6 - extent_z / 2 - rng.uniform(10, 60)
    centre = (float(rng.uniform(-8, 8)), float(anat.y0 + rng.uniform(-8, 8)), float(zc))
    geom = centred_geometry(shp, spc, centre, position, tilt)
    tex = _Field(rng, np.array([-250, -250, -400.0]), np.array([250, 250, 400.0]), 40)
    tex2 = _Field(rng, anat.spleen_bbox[0], anat.spleen_bbox[1], 10)
    dz, dy, dx = geom.spacing
    nsub = max(1, int(math.ceil(dz / 2.0 - 1e-6)))
    aff = geom.affine_lps()
    jj, ii = np.meshgrid(np.arange(sy), np.arange(sx), indexing="ij")
    noise_rng = np.random.default_rng([seed, 0x7015E])
    noise0, fwhm = float(rng.uniform(5, 18)), float(rng.uniform(0.6, 1.4))
    hu_out = np.empty(shp, np.float32)
    frac = np.empty(shp, np.float32)
    for k in range(sz):
        acc = np.zeros((sy, sx), np.float32)
        sp = np.zeros((sy, sx), np.float32)
        for s in range(nsub):
            kk = k - 0.5 + (s + 0.5) / nsub
            pts = (
                aff[:3, 0] * ii[..., None] + aff[:3, 1] * jj[..., None] + aff[:3, 2] * kk + aff[:3, 3]
            ).astype(np.float32)
            h, m = _paint_slice(anat, pts, tex, tex2)
            acc += h
            sp += m
        img = _psf(acc / nsub, dx, fwhm)
        width = float((img > -500).sum(axis=1).max()) * dx  # body width on this slice (mm)
        sigma = noise0 * math.exp((width - 330) / 250) / math.sqrt(max(dz, 0.6) / 2.5)
        hu_out[k] = img + np.float32(sigma) * _nps_noise(noise_rng, img.shape, dx)
        frac[k] = sp / nsub
    stored = np.clip(np.rint((hu_out - RESCALE_INTERCEPT) / RESCALE_SLOPE), 0, MAX_STORED).astype(np.uint16)
    label = (frac >= 0.5).astype(np.uint8)
    volume = float(frac.sum(dtype=np.float64)) * geom.voxel_volume_ml
    return Phantom(
        seed=seed,
        geometry=geom,
        stored=stored,
        label=label,
        spleen_volume_ml=volume,
        phase=anat.phase,
        noise_hu=noise0,
        anatomy_scale=1.0,
    )


def spleen_centroid_lps(ph: Phantom) -> np.ndarray:
    """Centroid (LPS mm) of the label of a phantom (for plausibility checks)."""
    kji = np.argwhere(ph.label > 0)
    ijk1 = np.c_[kji[:, 2], kji[:, 1], kji[:, 0], np.ones(len(kji))]
    return (ph.geometry.affine_lps() @ ijk1.T).T[:, :3].mean(axis=0)


__all__ = ["IndependentAnatomy", "generate_independent", "sample_independent_geometry", "spleen_centroid_lps"]

"""Domain-randomised training data: anatomy rendered once as a tissue-class map, intensities drawn per patch.

The network must segment the spleen from shape, position and context, not from one generator's contrasts, so
(after SynthSeg, Billot et al., Medical Image Analysis 2023) everything that must not matter is randomised:

* **Anatomy** (:func:`case_options`, drawn per seed): :class:`model.anatomy.Variation` (spleen 20-1000 mL,
  lobulation, clefts, accessory spleen, liver left lobe touching the spleen, stomach/colon pulled against it,
  patient size 0.6-1.15), splenectomy (about 12 % of cases) and fields of view without the spleen (about 8 %).
* **Acquisition geometry**: the case is rendered directly on the bundle's working grid (RAS, 1.5 x 1.5 x 2 mm,
  what ``Orientationd`` + ``Spacingd`` produce from any series), with gantry tilt; patient position (HFS, FFS,
  HFP, FFP) changes nothing after ``Orientationd(RAS)``, so it needs no samples of its own.
* **Intensities** (:func:`synthesize`, drawn per patch): every tissue class gets a fresh HU from a wide range
  (spleen 10-220 HU: darker or brighter than the liver, native to late arterial; oral contrast in bowel and
  stomach; with probability 0.3 liver, stomach wall, kidney and pancreas take the spleen's HU +- 10), or (with
  probability 0.3) the generator's own HU, scaled and shifted; per-tissue texture, an additive and a
  multiplicative bias field, slice thickness 0.6-7 mm (slab average + linear interpolation to 2 mm), in-plane
  reconstruction blur, correlated noise 2-35 HU of random grain, and tight fields of view (body cut by the
  image edge, the label with it).

Cache: ``<dir>/<seed>.tissue.npy`` (uint8 :data:`model.render.TISSUES`), ``<seed>.hu.npy`` (int16, noise-free
HU of the generator), ``<seed>.label.npy`` (uint8 spleen), ``<seed>.json``; all RAS voxel axes (x, y, z).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from model.anatomy import Variation, sample_anatomy
from model.render import TISSUES, render
from model.scan_geometry import PatientPosition, centred_geometry

logger = logging.getLogger(__name__)

GRID_MM = (2.0, 1.5, 1.5)  # (dz, dy, dx): the bundle's Spacingd pixdim 1.5 x 1.5 x 2.0 in DICOM order
_T = {name: i for i, name in enumerate(TISSUES)}


@dataclass(frozen=True)
class CaseOptions:
    """What one randomised training case looks like (drawn from its seed by :func:`case_options`)."""

    seed: int
    variation: Variation
    spleen_in_fov: bool
    tilt_deg: float
    slices: int
    z_offset_mm: float


def case_options(seed: int) -> CaseOptions:
    """Per-seed anatomy variation and field of view (deterministic)."""
    rng = np.random.default_rng([seed, 0xD0A1])
    splenectomy = bool(rng.random() < 0.12)
    spleen_in_fov = splenectomy or bool(rng.random() >= 0.09)
    var = Variation(splenectomy=splenectomy)
    tilt = float(rng.uniform(-20, 20)) if rng.random() < 0.35 else 0.0
    slices = int(rng.integers(60, 130))
    return CaseOptions(seed, var, spleen_in_fov, tilt, slices, float(rng.uniform(-50, 50)))


@dataclass
class RandomizedCase:
    """A cached case: tissue map, generator HU and spleen label on the working grid (RAS axes)."""

    seed: int
    tissue: np.ndarray
    hu: np.ndarray
    label: np.ndarray
    foreground: np.ndarray

    @staticmethod
    def load(cache_dir: Path, seed: int) -> RandomizedCase:
        tissue = np.load(cache_dir / f"{seed}.tissue.npy", mmap_mode="r")
        hu = np.load(cache_dir / f"{seed}.hu.npy", mmap_mode="r")
        label = np.load(cache_dir / f"{seed}.label.npy")
        return RandomizedCase(seed, tissue, hu, label, np.flatnonzero(label))


def _to_ras(arr: np.ndarray) -> np.ndarray:
    """[slice, row, col] of an HFS grid (row_dir +L, col_dir +P, slices +S) -> RAS voxel axes (x, y, z)."""
    return np.ascontiguousarray(arr.transpose(2, 1, 0)[::-1, ::-1, :])


def render_case(
    seed: int, grid_mm: tuple[float, float, float] = GRID_MM
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Render one randomised case on the working grid (``grid_mm`` (dz, dy, dx); coarser only for quick
    checks); (tissue uint8, hu int16, label uint8, info)."""
    opts = case_options(seed)
    rng = np.random.default_rng([seed, 0x5B1EE])
    anat = sample_anatomy(rng, variation=opts.variation, variation_rng=np.random.default_rng([seed, 0xA7A]))
    s, b = anat.scale, anat.body
    n = int(min(480 / grid_mm[1], math.ceil((2 * b.half_width * s + 30) / grid_mm[1])))
    extent_z = opts.slices * GRID_MM[0]
    slices = max(1, int(round(extent_z / grid_mm[0])))
    zc = anat.spleen_centre[2] * s + opts.z_offset_mm
    if not opts.spleen_in_fov:  # below the spleen: kidneys, bowel, pelvis
        zc = anat.spleen_centre[2] * s - anat.spleen_half_length * s * 1.3 - extent_z / 2 - 25
    cy = (b.half_depth_post - b.half_depth_ant) / 2 * s
    geom = centred_geometry((slices, n, n), grid_mm, (0.0, cy, zc), PatientPosition.HFS, opts.tilt_deg)
    res = render(anat, geom, with_tissue=True)
    assert res.tissue is not None
    label = res.spleen_fraction >= 0.5
    info = {
        "seed": seed,
        "options": {**asdict(opts), "variation": asdict(opts.variation)},
        "scale": s,
        "phase": anat.phase.value,
        "spleen_ml": float(res.spleen_fraction.sum(dtype=np.float64)) * float(np.prod(grid_mm)) / 1000,
        "shape_ras": list(label.shape[::-1]),
    }
    hu = np.clip(np.rint(res.hu), -1024, 3000).astype(np.int16)
    return _to_ras(res.tissue), _to_ras(hu), _to_ras(label.astype(np.uint8)), info


def build_randomized_cache(seeds: list[int], cache_dir: Path, progress: Any = None) -> None:
    """Render the seeds not cached yet (``.tissue.npy`` is written last and marks a complete case)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        if not (cache_dir / f"{seed}.tissue.npy").exists():
            tissue, hu, label, info = render_case(seed)
            np.save(cache_dir / f"{seed}.hu.npy", hu)
            np.save(cache_dir / f"{seed}.label.npy", label)
            (cache_dir / f"{seed}.json").write_text(json.dumps(info) + "\n")
            np.save(cache_dir / f"{seed}.tissue.npy", tissue)
            logger.info("randomised case %d: %s, spleen %.1f mL", seed, tissue.shape, info["spleen_ml"])
        if progress is not None:
            progress(1)


def cached_seeds(cache_dir: Path) -> list[int]:
    """Seeds whose randomised case is complete in ``cache_dir``."""
    return sorted(int(p.name.split(".")[0]) for p in cache_dir.glob("*.tissue.npy"))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """A smooth random field of unit standard deviation with about ``cells`` features along each axis."""
    low = rng.standard_normal((cells + 1,) * len(shape)).astype(np.float32)
    field = ndimage.zoom(low, [s / (cells + 1) for s in shape], order=1, mode="nearest", grid_mode=True)
    field = field[tuple(slice(0, s) for s in shape)]
    std = float(field.std()) or 1.0
    return (field - field.mean()) / std


def tissue_hu(rng: np.random.Generator) -> np.ndarray:
    """A fresh HU per tissue class (index = :data:`TISSUES`)."""
    u = rng.uniform
    lut = np.zeros(len(TISSUES), np.float32)
    fat = u(-140, -60)
    soft = {
        "skin": u(-20, 80), "muscle": u(20, 90), "liver": u(20, 200), "spleen": u(10, 220),
        "kidney": u(15, 320), "stomach_wall": u(10, 160), "pancreas": u(15, 160), "bowel_wall": u(10, 160),
        "aorta": u(20, 420), "ivc": u(20, 260), "bowel_soft": u(0, 90), "spinal_canal": u(-10, 50),
    }  # fmt: skip
    lut[_T["air"]] = -1000
    lut[_T["gas"]] = u(-1000, -800)
    lut[_T["fat"]] = fat
    lut[_T["visceral_fat"]] = fat + u(-20, 25)
    lut[_T["lung"]] = u(-950, -650)
    lut[_T["bone_cortex"]] = u(300, 1300)
    lut[_T["rib"]] = u(150, 900)
    lut[_T["bone_cancellous"]] = u(90, 350)
    oral = rng.random() < 0.15
    lut[_T["stomach_content"]] = u(100, 450) if oral else u(-10, 45)
    lut[_T["bowel_fluid"]] = u(100, 450) if oral and rng.random() < 0.7 else u(-10, 35)
    for name, v in soft.items():
        lut[_T[name]] = v
    if rng.random() < 0.3:  # neighbours of the spleen's own density
        for name in ("liver", "stomach_wall", "kidney", "pancreas", "bowel_wall"):
            if rng.random() < 0.6:
                lut[_T[name]] = lut[_T["spleen"]] + u(-10, 10)
    return lut


def _thick_slices(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slice thickness 0.6-7 mm seen on the 2 mm grid: slab average, samples every slice, linear back."""
    t = float(np.exp(rng.uniform(np.log(0.6), np.log(7.0))))
    f = t / GRID_MM[0]
    if f <= 1.0:
        return img
    slab = ndimage.uniform_filter1d(img, size=max(1, int(round(f))), axis=2, mode="nearest")
    nz = img.shape[2]
    pos = np.arange(rng.uniform(0, f), nz, f)
    if len(pos) < 2:
        return slab
    samples = slab[:, :, np.clip(np.rint(pos).astype(int), 0, nz - 1)]
    q = np.clip(np.arange(nz, dtype=np.float32), pos[0], pos[-1])
    lo = np.clip(np.searchsorted(pos, q, side="right") - 1, 0, len(pos) - 2)
    w = ((q - pos[lo]) / (pos[lo + 1] - pos[lo])).astype(np.float32)
    return samples[:, :, lo] * (1 - w) + samples[:, :, lo + 1] * w


def synthesize(
    tissue: np.ndarray, hu: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One randomised image (HU, float32) and its label from a cached patch (RAS axes)."""
    shape = tissue.shape
    if rng.random() < 0.3:  # the generator's own contrasts, globally scaled and shifted
        img = np.asarray(hu, np.float32) * np.float32(rng.uniform(0.85, 1.15)) + np.float32(
            rng.uniform(-25, 25)
        )
        img = ndimage.gaussian_filter(img, 0.3)
    else:
        lut = tissue_hu(rng)
        img = lut[np.asarray(tissue)]
        amp = rng.uniform(0, 22, len(TISSUES)).astype(np.float32)
        amp[[_T["air"], _T["gas"]]] = 0
        img = img + amp[np.asarray(tissue)] * _smooth_field(rng, shape, int(rng.integers(6, 24)))
        img = ndimage.gaussian_filter(img, rng.uniform(0.4, 0.8))  # partial volume at the edges
    img = img + np.float32(rng.uniform(0, 30)) * _smooth_field(rng, shape, 2)  # additive bias
    img = img * (1 + np.float32(rng.uniform(0, 0.08)) * _smooth_field(rng, shape, 2))  # gain bias
    img = _thick_slices(img, rng)
    blur = rng.uniform(0.0, 1.0)
    if blur > 0.15:
        img = ndimage.gaussian_filter(img, (blur, blur, 0))
    noise = rng.standard_normal(shape).astype(np.float32)
    grain = rng.uniform(0, 1.3)
    if grain > 0.2:
        noise = ndimage.gaussian_filter(noise, (grain, grain, grain * rng.uniform(0.3, 1.0)))
        noise /= float(noise.std()) or 1.0
    img = img + np.float32(rng.uniform(2, 35)) * noise
    label = np.array(label, dtype=np.uint8)
    if rng.random() < 0.25:  # tight field of view: the image (and the label) end inside the patch
        axis, cut = int(rng.integers(0, 2)), int(rng.integers(shape[0] // 5, shape[0] // 2))
        sl = [slice(None)] * 3
        sl[axis] = slice(0, cut) if rng.random() < 0.5 else slice(shape[axis] - cut, None)
        img[tuple(sl)] = -1024.0
        label[tuple(sl)] = 0
    return img.astype(np.float32), label


def random_case_patch(
    case: RandomizedCase, rng: np.random.Generator, patch: int, positive: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``patch``^3 crop (tissue, hu, label) centred on a spleen voxel (``positive``) or anywhere."""
    shape = case.label.shape
    if positive and case.foreground.size:
        centre = np.unravel_index(case.foreground[rng.integers(case.foreground.size)], shape)
    else:
        centre = tuple(int(rng.integers(s)) for s in shape)
    start = [int(np.clip(c - patch // 2, 0, max(0, s - patch))) for c, s in zip(centre, shape, strict=True)]
    sl = tuple(slice(s, s + patch) for s in start)
    tissue, hu, label = np.asarray(case.tissue[sl]), np.asarray(case.hu[sl]), case.label[sl]
    pad = [(0, patch - s) for s in tissue.shape]
    if any(p[1] for p in pad):  # smaller than a patch: air around it, like the sliding window's padding
        tissue, label = np.pad(tissue, pad), np.pad(label, pad)
        hu = np.pad(hu, pad, constant_values=-1000)
    return tissue, hu, label

"""Training cache: phantoms resampled once with the bundle's own spatial/intensity transforms, stored as .npy.

Each case is ``<work>/cache/<seed>.image.npy`` (float16, intensity-scaled 0..1, RAS, 1.5x1.5x2.0 mm, padded to
at least one patch) and ``<seed>.label.npy`` (uint8), plus ``<seed>.json`` (spleen volume, source geometry).
Array axes are MONAI's (R->L... i.e. RAS voxel axes x, y, z) after ``Orientationd(RAS)``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.bundle import read_configs
from model import SOURCE_BUNDLE_DIR
from model.phantoms import Phantom, generate_phantom

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocessing:
    """The spatial/intensity parameters of the bundle's preprocessing (read from inference.json)."""

    axcodes: str
    pixdim: tuple[float, float, float]
    a_min: float
    a_max: float
    b_min: float
    b_max: float

    @staticmethod
    def from_bundle(bundle_dir: Path = SOURCE_BUNDLE_DIR) -> Preprocessing:
        _, inference = read_configs(bundle_dir)
        by_name = {t["_target_"]: t for t in inference["preprocessing"]["transforms"]}
        o, s, i = by_name["Orientationd"], by_name["Spacingd"], by_name["ScaleIntensityRanged"]
        return Preprocessing(
            axcodes=o["axcodes"],
            pixdim=tuple(s["pixdim"]),
            a_min=i["a_min"],
            a_max=i["a_max"],
            b_min=i["b_min"],
            b_max=i["b_max"],
        )

    def transforms(self) -> Any:
        """MONAI Compose for {'image','label'} MetaTensors (channel-first): the bundle's transforms, label
        nearest."""
        from monai.transforms import Compose, Orientationd, ScaleIntensityRanged, Spacingd

        return Compose(
            [
                Orientationd(keys=["image", "label"], axcodes=self.axcodes),
                Spacingd(keys=["image", "label"], pixdim=self.pixdim, mode=("bilinear", "nearest")),
                ScaleIntensityRanged(
                    keys="image",
                    a_min=self.a_min,
                    a_max=self.a_max,
                    b_min=self.b_min,
                    b_max=self.b_max,
                    clip=True,
                ),
            ]
        )


def training_geometry(seed: int) -> dict[str, Any]:
    """Acquisition for training phantoms: realistic FOV and slice thickness, in-plane pixels up to 1.5 mm so
    the cache is cheap to build (everything is resampled to 1.5x1.5x2.0 mm anyway)."""
    rng = np.random.default_rng([seed, 0x7A1])
    fov = rng.uniform(330, 460)
    px = rng.uniform(0.75, 1.5)
    n = int(round(fov / px))
    dz = float(rng.choice([1.0, 1.5, 2.0, 2.5, 3.0, 5.0]))
    nz = int(np.clip(round(rng.uniform(170, 300) / dz), 40, 300))
    return {"shape": (nz, n, n), "spacing": (dz, px, px)}


def phantom_to_training_arrays(ph: Phantom, prep: Preprocessing, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample a phantom with the bundle's transforms; returns (image float16, label uint8), RAS axes."""
    import torch
    from monai.data import MetaTensor

    affine = torch.as_tensor(ph.geometry.affine_ras(), dtype=torch.float64)
    image = MetaTensor(torch.from_numpy(np.ascontiguousarray(ph.hu.transpose(2, 1, 0)))[None], affine=affine)
    label = MetaTensor(
        torch.from_numpy(np.ascontiguousarray(ph.label.transpose(2, 1, 0)))[None].float(), affine=affine
    )
    out = prep.transforms()({"image": image, "label": label})
    img = out["image"][0].numpy()
    lbl = (out["label"][0].numpy() > 0.5).astype(np.uint8)
    pad = [(0, max(0, patch - s)) for s in img.shape]
    if any(p[1] for p in pad):
        img = np.pad(img, pad)
        lbl = np.pad(lbl, pad)
    return img.astype(np.float16), lbl


def build_cache(seeds: list[int], cache_dir: Path, patch: int = 96, progress: Any = None) -> list[Path]:
    """Generate and resample the phantoms of ``seeds`` that are not cached yet; return their image paths."""
    prep = Preprocessing.from_bundle()
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        img_path = cache_dir / f"{seed}.image.npy"
        if not img_path.exists():
            ph = generate_phantom(seed, **training_geometry(seed))
            img, lbl = phantom_to_training_arrays(ph, prep, patch)
            np.save(cache_dir / f"{seed}.label.npy", lbl)
            (cache_dir / f"{seed}.json").write_text(json.dumps(ph.info()) + "\n")
            np.save(img_path, img)  # written last: its presence marks a complete case
            logger.info(
                "cached seed %d: %s -> %s, spleen %.1f mL",
                seed,
                ph.geometry.shape,
                img.shape,
                ph.spleen_volume_ml,
            )
        paths.append(img_path)
        if progress is not None:
            progress(1)
    return paths


@dataclass
class CachedCase:
    seed: int
    image: np.ndarray  # float16 memmap
    label: np.ndarray  # uint8
    foreground: np.ndarray  # flat indices of label voxels

    @staticmethod
    def load(cache_dir: Path, seed: int) -> CachedCase:
        image = np.load(cache_dir / f"{seed}.image.npy", mmap_mode="r")
        label = np.load(cache_dir / f"{seed}.label.npy")
        return CachedCase(seed, image, label, np.flatnonzero(label))


def random_patch(
    case: CachedCase, rng: np.random.Generator, patch: int, positive: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A ``patch``^3 crop centred on a spleen voxel (``positive``) or anywhere; (image float32, label
    uint8)."""
    shape = case.label.shape
    if positive and case.foreground.size:
        centre = np.unravel_index(case.foreground[rng.integers(case.foreground.size)], shape)
    else:
        centre = tuple(int(rng.integers(s)) for s in shape)
    start = [int(np.clip(c - patch // 2, 0, s - patch)) for c, s in zip(centre, shape, strict=True)]
    sl = tuple(slice(s, s + patch) for s in start)
    return np.asarray(case.image[sl], dtype=np.float32), case.label[sl]

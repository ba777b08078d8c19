"""Synthetic abdominal CT phantoms with a spleen label (library + ``spleen-phantoms`` CLI).

Library::

    ph = generate_phantom(seed=7)                                        # random realistic geometry
    ph = generate_phantom(seed=7, shape=(40, 128, 128), spacing=(5.0, 2.5, 2.5))   # small, for tests
    paths = write_dicom_series(ph, "out/ct")                             # DICOM CT series
    write_label(ph, "out")                                               # label.nii.gz + phantom.json

Arrays are ``[slice, row, col]`` (DICOM order, see :mod:`model.scan_geometry`); ``label.nii.gz`` stores the
same voxels as ``[col, row, slice]`` with the RAS affine of the series, so it overlays the DICOM series in any
viewer and in MONAI (``LoadImage``) exactly. ``spleen_volume_ml`` is the true (partial-volume) spleen volume
inside the imaged field of view; ``label_volume_ml`` is the voxel count of the binary label times the voxel
volume. Everything is deterministic given the seed and the arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.anatomy import Anatomy, Variation, sample_anatomy
from model.dicom_series import SeriesUIDs, write_dicom_series
from model.render import acquire, render
from model.scan_geometry import PatientPosition, ScanGeometry, centred_geometry

logger = logging.getLogger(__name__)

RESCALE_SLOPE = 1.0
RESCALE_INTERCEPT = -1024.0
MAX_STORED = 4095  # 12 bits

__all__ = ["Phantom", "generate_phantom", "write_dicom_series", "write_label", "write_image_nifti", "main"]


@dataclass
class Phantom:
    """One synthetic CT study: 12-bit stored pixels, binary spleen label and ground-truth volume."""

    seed: int
    geometry: ScanGeometry
    stored: np.ndarray  # uint16 [slice, row, col], HU = stored * slope + intercept
    label: np.ndarray  # uint8 [slice, row, col], 1 = spleen
    spleen_volume_ml: float
    phase: str
    noise_hu: float
    anatomy_scale: float
    rescale_slope: float = RESCALE_SLOPE
    rescale_intercept: float = RESCALE_INTERCEPT

    @property
    def hu(self) -> np.ndarray:
        """HU image as float32 (a new array)."""
        return self.stored.astype(np.float32) * np.float32(self.rescale_slope) + np.float32(
            self.rescale_intercept
        )

    @property
    def label_volume_ml(self) -> float:
        return float(self.label.sum()) * self.geometry.voxel_volume_ml

    def info(self) -> dict[str, Any]:
        """JSON-serialisable description (no arrays)."""
        g = self.geometry
        return {
            "seed": self.seed,
            "spleen_volume_ml": round(self.spleen_volume_ml, 3),
            "label_volume_ml": round(self.label_volume_ml, 3),
            "phase": self.phase,
            "noise_hu": round(self.noise_hu, 2),
            "anatomy_scale": round(self.anatomy_scale, 4),
            "geometry": {**asdict(g), "patient_position": g.patient_position.value},
            "array_order": "[slice, row, col]; label.nii.gz stores [col, row, slice] with the RAS affine",
        }


def sample_geometry_params(rng: np.random.Generator) -> dict[str, Any]:
    """Random acquisition: 0.6-0.95 mm pixels with a realistic abdominal field of view (300-460 mm, so
    256-512 px), 1-5 mm slices, 40-300 slices, patient position, tilt."""
    px = float(rng.uniform(0.6, 0.95))
    n = int(np.clip(round(rng.uniform(300, 460) / px / 16) * 16, 256, 512))
    dz = float(rng.choice([1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0]))
    nz = int(np.clip(round(rng.uniform(150, 380) / dz), 40, 300))
    position = PatientPosition(rng.choice([p.value for p in PatientPosition], p=[0.7, 0.14, 0.08, 0.08]))
    tilt = float(rng.uniform(-12, 12)) if rng.random() < 0.25 else 0.0
    return {"shape": (nz, n, n), "spacing": (dz, px, px), "patient_position": position, "tilt_deg": tilt}


def _study_centre(anat: Anatomy, rng: np.random.Generator, extent_z: float) -> tuple[float, float, float]:
    s, b = anat.scale, anat.body
    cy = (b.half_depth_post - b.half_depth_ant) / 2 * s + rng.uniform(-10, 10)
    cx = rng.uniform(-10, 10)
    zc = anat.spleen_centre[2] * s
    slack = extent_z / 2 - anat.spleen_half_length * s * 1.1 - 10
    if slack > 0:
        zc += rng.uniform(-min(slack, 60), min(slack, 60))
    return (float(cx), float(cy), float(zc))


def generate_phantom(
    seed: int,
    shape: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    patient_position: PatientPosition | str | None = None,
    tilt_deg: float | None = None,
    progress: Any = None,
    variation: Variation | None = None,
) -> Phantom:
    """Generate one phantom. Unspecified acquisition parameters are drawn from the seed.

    ``shape`` is (slices, rows, cols), ``spacing`` (slice thickness, row spacing, column spacing) in mm.
    ``progress`` is an optional callable receiving the number of slices finished. ``variation`` widens the
    anatomy (:class:`model.anatomy.Variation`, e.g. ``Variation(splenectomy=True)`` for a case without a
    spleen); without it the phantom is exactly the original family's.
    """
    rng = np.random.default_rng([seed, 0x5B1EE])
    params = sample_geometry_params(np.random.default_rng([seed, 0x6E0]))
    shape = tuple(int(v) for v in (shape or params["shape"]))  # type: ignore[assignment]
    spacing = tuple(float(v) for v in (spacing or params["spacing"]))  # type: ignore[assignment]
    position = PatientPosition(patient_position or params["patient_position"])
    tilt = params["tilt_deg"] if tilt_deg is None else float(tilt_deg)
    fov_x, fov_y = shape[2] * spacing[2], shape[1] * spacing[1]  # type: ignore[index]
    anat = sample_anatomy(
        rng,
        max_half_width=0.95 * fov_x / 2 / 1.05,
        max_depth=0.95 * fov_y / 1.05,
        variation=variation,
        variation_rng=np.random.default_rng([seed, 0xA7A]) if variation is not None else None,
    )
    centre = _study_centre(anat, rng, shape[0] * spacing[0])  # type: ignore[index]
    geom = centred_geometry(shape, spacing, centre, position, tilt)  # type: ignore[arg-type]
    result = render(anat, geom, progress)
    noise = float(rng.uniform(6, 22))
    blur = float(rng.uniform(0.3, 0.8))
    hu = acquire(result.hu, np.random.default_rng([seed, 0x401]), noise, blur)
    stored = np.clip(np.rint((hu - RESCALE_INTERCEPT) / RESCALE_SLOPE), 0, MAX_STORED).astype(np.uint16)
    label = (result.spleen_fraction >= 0.5).astype(np.uint8)
    volume = float(result.spleen_fraction.sum(dtype=np.float64)) * geom.voxel_volume_ml
    logger.debug("phantom seed %d: %s, spleen %.1f mL, phase %s", seed, geom.shape, volume, anat.phase.value)
    return Phantom(
        seed=seed,
        geometry=geom,
        stored=stored,
        label=label,
        spleen_volume_ml=volume,
        phase=anat.phase.value,
        noise_hu=noise,
        anatomy_scale=anat.scale,
    )


def write_label(phantom: Phantom, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``label.nii.gz`` (RAS affine of the series) and ``phantom.json``; return both paths."""
    import nibabel as nib

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(
        np.ascontiguousarray(phantom.label.transpose(2, 1, 0)), phantom.geometry.affine_ras()
    )
    img.header.set_xyzt_units("mm")
    label_path = out / "label.nii.gz"
    nib.save(img, str(label_path))
    info_path = out / "phantom.json"
    info = phantom.info()
    info["uids"] = asdict(SeriesUIDs.for_seed(phantom.seed))
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return label_path, info_path


def write_image_nifti(phantom: Phantom, path: str | Path) -> Path:
    """The HU image as int16 NIfTI in the label's convention (for training/evaluation pipelines)."""
    import nibabel as nib

    hu = np.clip(phantom.hu, -32768, 32767).astype(np.int16)
    img = nib.Nifti1Image(np.ascontiguousarray(hu.transpose(2, 1, 0)), phantom.geometry.affine_ras())
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return Path(path)


def _parse_triplet(text: str, kind: type) -> tuple[Any, Any, Any]:
    parts = text.replace("x", ",").split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three values like 40,128,128; got {text!r}")
    return tuple(kind(p) for p in parts)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    ap = argparse.ArgumentParser(
        prog="spleen-phantoms",
        description="Write synthetic abdominal CT phantoms "
        "(DICOM series + label.nii.gz + phantom.json per seed).",
    )
    ap.add_argument("output", type=Path, help="output folder; one sub-folder per seed")
    ap.add_argument("--seeds", default="0", help="seeds, e.g. 0-9 or 3,5,8")
    ap.add_argument(
        "--shape", type=lambda t: _parse_triplet(t, int), help="slices,rows,cols (default: random)"
    )
    ap.add_argument(
        "--spacing", type=lambda t: _parse_triplet(t, float), help="thickness,row,col in mm (default: random)"
    )
    ap.add_argument("--position", choices=[p.value for p in PatientPosition], help="patient position")
    ap.add_argument("--nifti-image", action="store_true", help="also write image.nii.gz")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    seeds = _parse_seeds(args.seeds)
    for seed in tqdm(seeds, desc="phantoms", unit="study"):
        out = args.output / f"phantom_{seed:05d}"
        ph = generate_phantom(seed, shape=args.shape, spacing=args.spacing, patient_position=args.position)
        write_dicom_series(ph, out / "dicom")
        write_label(ph, out)
        if args.nifti_image:
            write_image_nifti(ph, out / "image.nii.gz")
        tqdm.write(
            f"{out}: {ph.geometry.shape} spacing {ph.geometry.spacing} {ph.geometry.patient_position.value} "
            f"{ph.phase} spleen {ph.spleen_volume_ml:.1f} mL"
        )
    return 0


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part.strip()[1:]:
            a, b = part.split("-", 1)
            seeds += range(int(a), int(b) + 1)
        else:
            seeds.append(int(part))
    if not seeds:
        raise SystemExit(f"--seeds {text!r} names no seed")
    return seeds


if __name__ == "__main__":
    raise SystemExit(main())

"""Reading a preview PNG as a person would: where the red outline and the spine are in each panel.

Each panel's field of view is found from its frame (the only blue lines of the picture); the outline's and
the spine's centres are measured as fractions of that frame. The expected fractions come from the phantom's
own truth (label, HU and the LPS affine of its geometry), not from the renderer, along the directions the
radiological convention puts on the image's columns and rows (axial: patient left to the right, posterior
down; coronal: left to the right, superior up; sagittal: posterior to the right, superior up).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

#: For each panel: (plane axis, column axis, column sign, row axis, row sign); LPS axes 0 = L, 1 = P, 2 = S.
PANELS = {
    "axial": (2, 0, +1, 1, +1),
    "coronal": (1, 0, +1, 2, -1),
    "sagittal": (0, 1, +1, 2, -1),
}
BONE_HU = 300.0  # well above the soft-tissue window's top (240 HU): white
BONE_GREY = 250


def read_rgb(path: Path) -> np.ndarray:
    with PILImage.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


def outline_pixels(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r >= 180) & (r - np.maximum(g, b) >= 100)


def banner_pixels(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r >= 200) & (g >= 150) & (b <= 80)


def frame_pixels(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (b >= 40) & (b >= 1.8 * np.maximum(r, g))


def panels(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """The figure's three equal-width panels, left to right."""
    third = rgb.shape[1] // 3
    return {name: rgb[:, i * third : (i + 1) * third] for i, name in enumerate(PANELS)}


def image_positions(panel: np.ndarray) -> dict[str, tuple[float, float]]:
    """(column, row) fractions of the outline's and the white bone's centres within the panel's frame."""
    rows, cols = np.nonzero(frame_pixels(panel))
    assert len(rows) > 100, "no frame around the panel's field of view"
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    inside = np.zeros(panel.shape[:2], bool)
    inside[r0 + 2 : r1 - 1, c0 + 2 : c1 - 1] = True
    grey = (panel.max(axis=-1) - panel.min(axis=-1) <= 10) & (panel.min(axis=-1) >= BONE_GREY)
    out = {}
    for name, found in (("outline", outline_pixels(panel) & inside), ("bone", grey & inside)):
        r, c = np.nonzero(found)
        if len(r):
            out[name] = (float((c.mean() - c0) / (c1 - c0)), float((r.mean() - r0) / (r1 - r0)))
    return out


def truth_positions(
    hu: np.ndarray, label: np.ndarray, affine_lps: np.ndarray, slab_mm: float
) -> dict[str, dict[str, tuple[float, float]]]:
    """Expected fractions per panel from ``[slice, row, col]`` arrays and their (col, row, slice) -> LPS
    affine: centres of the label and of bone (in the ``slab_mm`` slab of each plane through the label's
    centre), as fractions of the field of view's extent (voxel edges) along each panel's column and row
    directions."""
    k, j, i = np.indices(hu.shape).reshape(3, -1)
    lps = (affine_lps @ np.stack([i, j, k, np.ones_like(i)]).astype(float))[:3].T
    half_voxel = np.abs(affine_lps[:3, :3]).sum(axis=1) / 2  # per LPS axis (exact when untilted)
    lo, hi = lps.min(axis=0) - half_voxel, lps.max(axis=0) + half_voxel
    flat_hu, flat_label = hu.reshape(-1), label.reshape(-1).astype(bool)
    centre = lps[flat_label].mean(axis=0)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name, (plane, col, col_sign, row, row_sign) in PANELS.items():
        slab = np.abs(lps[:, plane] - centre[plane]) <= slab_mm / 2
        found = {"outline": lps[flat_label & slab], "bone": lps[(flat_hu >= BONE_HU) & slab]}
        out[name] = {}
        for what, points in found.items():
            fc = (points[:, col].mean() - lo[col]) / (hi[col] - lo[col])
            fr = (points[:, row].mean() - lo[row]) / (hi[row] - lo[row])
            out[name][what] = (
                float(fc if col_sign > 0 else 1 - fc),
                float(fr if row_sign > 0 else 1 - fr),
            )
    return out


def check_preview_orientation(
    png: Path,
    hu: np.ndarray,
    label: np.ndarray,
    affine_lps: np.ndarray,
    slab_mm: float,
    tol: float = 0.06,
    checked: tuple[str, ...] = ("outline", "bone"),
) -> dict[str, dict[str, tuple[float, float]]]:
    """Assert every panel's outline and bone centres sit where the truth puts them (within ``tol`` of the
    field of view); returns the measured fractions. A tilted series is shown on its own (tilted) planes, which
    cut other bones than the true planes: check only its outline."""
    rgb = read_rgb(png)
    truth = truth_positions(hu, label, affine_lps, slab_mm)
    measured = {name: image_positions(panel) for name, panel in panels(rgb).items()}
    problems = []
    for name, expected in truth.items():
        for what, (fc, fr) in expected.items():
            if what not in checked:
                continue
            got = measured[name].get(what)
            if got is None:
                problems.append(f"{name}: no {what} pixels")
            elif abs(got[0] - fc) > tol or abs(got[1] - fr) > tol:
                problems.append(
                    f"{name} {what} at (col, row) {got[0]:.3f}, {got[1]:.3f}; expected {fc:.3f}, {fr:.3f}"
                )
    assert not problems, "; ".join(problems)
    return measured

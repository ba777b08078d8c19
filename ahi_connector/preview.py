"""Preview picture of a CT series and its spleen mask: axial, coronal and sagittal views in one PNG.

:func:`render_preview` draws the three orthogonal planes through the spleen's centre (through the volume's
centre when there is no mask), the CT in a soft-tissue window (W 400 / L 40 HU), the mask's outline in
:data:`OUTLINE_RGB`, orientation letters on every edge, a scale bar, a frame around each view's field of
view and a caption (the caller's lines: volume, model, series). An empty mask gives the same views through
the volume's centre under a "No spleen found" banner in :data:`BANNER_RGB`, so an empty result is never
mistaken for a missing picture.

Orientation follows the radiological convention of clinical viewers: the axial view is seen from the feet,
patient left on the image's right and anterior up; the coronal view is seen from the front (patient left on
the right, superior up); the sagittal view is seen from the patient's left (anterior on the left, superior
up). The array is first turned to the patient axes with :func:`to_patient_axes`, which uses the series affine
(``affine[:3, :3]`` columns = LPS steps of the array axes, as :mod:`ahi_connector.geometry` computes it), so
head-first, feet-first and prone series all come out the same way up. An oblique (tilted) series is shown on
its nearest patient axes without resampling; its letters then name the nearest direction.

matplotlib is imported inside :func:`render_preview` (a bare ``Figure``, rendered by Agg: no pyplot, no
display, no backend switch), so importing this module costs nothing and the AHI connector can offer previews
without depending on matplotlib.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Soft-tissue window (HU).
WINDOW_WIDTH = 400.0
WINDOW_LEVEL = 40.0
#: Outline colour of the mask (a saturated red no grey CT pixel has) and of the "No spleen found" banner.
OUTLINE_RGB = (1.0, 0.15, 0.15)
BANNER_RGB = (1.0, 0.8, 0.0)
#: Orientation letters and scale bar; the frame drawn around each view's field of view.
LETTER_RGB = (0.4, 0.85, 1.0)
FRAME_RGB = (0.2, 0.2, 0.55)
NO_SPLEEN_TEXT = "No spleen found"
PANEL_TITLES = ("Axial", "Coronal", "Sagittal")
#: Orientation letters of each panel as (left, right, top, bottom) edges.
PANEL_LETTERS = {
    "Axial": ("R", "L", "A", "P"),
    "Coronal": ("R", "L", "S", "I"),
    "Sagittal": ("A", "P", "S", "I"),
}
FIGURE_INCHES = (12.0, 4.8)
DPI = 100


@dataclass(frozen=True)
class PatientVolume:
    """A volume on the patient axes: ``array[s, p, l]`` with index increasing toward superior (s), posterior
    (p) and the patient's left (l); ``spacing`` = (s, p, l) voxel sizes in mm."""

    array: np.ndarray
    spacing: tuple[float, float, float]


def _axis_assignment(direction: np.ndarray) -> list[int]:
    """For each array axis, the patient axis (0 = L, 1 = P, 2 = S) it runs closest to, each used once."""
    weights = np.abs(direction / np.linalg.norm(direction, axis=0))
    assigned: list[int | None] = [None, None, None]
    free_patient = {0, 1, 2}
    # Strongest alignments first, so a tilted axis takes what is left rather than stealing a clean one.
    for flat in np.argsort(-weights, axis=None):
        patient, array_axis = divmod(int(flat), 3)
        if assigned[array_axis] is None and patient in free_patient:
            assigned[array_axis] = patient
            free_patient.discard(patient)
    return [int(a) for a in assigned]  # type: ignore[arg-type]


def to_patient_axes(array: np.ndarray, affine: np.ndarray) -> PatientVolume:
    """``array`` (any axis order) turned and flipped to ``[superior, posterior, left]`` using its 4x4 affine
    (array index -> LPS mm); no resampling, so values are kept exactly."""
    direction = np.asarray(affine, dtype=float)[:3, :3]
    if array.ndim != 3 or abs(np.linalg.det(direction)) < 1e-9:
        raise ValueError(f"need a 3-D array with an invertible affine, got shape {array.shape}")
    patient_of = _axis_assignment(direction)
    out = np.asarray(array)
    for axis, patient in enumerate(patient_of):
        if direction[patient, axis] < 0:  # index runs toward right / anterior / inferior: flip it
            out = np.flip(out, axis=axis)
    # Output axis n holds patient axis (2, 1, 0)[n] (S, P, L).
    order = [patient_of.index(p) for p in (2, 1, 0)]
    steps = np.linalg.norm(direction, axis=0)
    spacing = tuple(float(steps[a]) for a in order)
    return PatientVolume(np.transpose(out, order), spacing)  # type: ignore[arg-type]


def _centre(mask: np.ndarray | None, shape: Sequence[int]) -> tuple[int, int, int]:
    """Index of the planes to show: through the mask's centroid (moved to the fullest plane on any axis where
    the centroid's plane misses the mask), else through the volume's centre."""
    if mask is None or not np.any(mask):
        return tuple(n // 2 for n in shape)  # type: ignore[return-value]
    idx = np.argwhere(mask)
    centre = [int(round(v)) for v in idx.mean(axis=0)]
    for axis in range(3):
        profile = np.count_nonzero(mask, axis=tuple(a for a in range(3) if a != axis))
        if profile[centre[axis]] == 0:
            centre[axis] = int(np.argmax(profile))
    return tuple(centre)  # type: ignore[return-value]


def _planes(vol: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal 2-D arrays of a ``[s, p, l]`` volume, rows top-to-bottom as displayed."""
    s, p, l_ = centre
    return [
        vol[s, :, :],  # rows anterior -> posterior, columns right -> left (patient left on the image right)
        vol[::-1, p, :],  # rows superior -> inferior, columns right -> left
        vol[::-1, :, l_],  # rows superior -> inferior, columns anterior -> posterior
    ]


def _plane_spacings(spacing: tuple[float, float, float]) -> list[tuple[float, float]]:
    """(row, column) pixel sizes in mm of the three planes of :func:`_planes`."""
    ds, dp, dl = spacing
    return [(dp, dl), (ds, dl), (ds, dp)]


def _scale_bar_mm(width_mm: float) -> int:
    """A round length close to a fifth of the panel width."""
    for length in (200, 100, 50, 20, 10, 5, 2, 1):
        if length <= width_mm / 4:
            return length
    return 1


def render_preview(
    ct: np.ndarray,
    affine: np.ndarray,
    output_file: Path | str,
    *,
    mask: np.ndarray | None = None,
    caption: Sequence[str] = (),
) -> Path:
    """Write the preview PNG of a CT volume (HU; any axis order, ``affine`` maps its indices to LPS mm) and,
    when given, its binary ``mask`` on the same grid. Returns the written path."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; pyplot's backend is left alone
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    ct_p = to_patient_axes(np.asarray(ct), affine)
    mask_p = None
    if mask is not None:
        if np.shape(mask) != np.shape(ct):
            raise ValueError(f"mask shape {np.shape(mask)} differs from the CT's {np.shape(ct)}")
        mask_p = to_patient_axes(np.asarray(mask) > 0, affine).array
    no_spleen = mask_p is not None and not np.any(mask_p)
    centre = _centre(mask_p, ct_p.array.shape)

    fig = Figure(figsize=FIGURE_INCHES, dpi=DPI, facecolor="black")
    axes = fig.subplots(1, 3, gridspec_kw={"wspace": 0.04, "left": 0.01, "right": 0.99, "top": 0.9})
    planes = _planes(ct_p.array, centre)
    mask_planes = _planes(mask_p, centre) if mask_p is not None else [None] * 3
    low, high = WINDOW_LEVEL - WINDOW_WIDTH / 2, WINDOW_LEVEL + WINDOW_WIDTH / 2
    for ax, title, plane, mplane, (dr, dc) in zip(
        axes, PANEL_TITLES, planes, mask_planes, _plane_spacings(ct_p.spacing), strict=True
    ):
        rows, cols = plane.shape
        height, width = rows * dr, cols * dc
        ax.set_facecolor("black")
        if min(rows, cols) < 2:  # a single slice (or row) has no view across it
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"{title}: one slice,\nno view", color="white", ha="center", va="center")
            continue
        ax.imshow(
            plane, cmap="gray", vmin=low, vmax=high, extent=(0, width, height, 0), interpolation="bilinear"
        )
        if mplane is not None and np.any(mplane):
            # Zero border on the field of view's edges, so a mask that reaches an edge is outlined there too.
            xs = np.concatenate([[0.0], (np.arange(cols) + 0.5) * dc, [width]])
            ys = np.concatenate([[0.0], (np.arange(rows) + 0.5) * dr, [height]])
            padded = np.pad(mplane.astype(np.float32), 1)
            ax.contour(xs, ys, padded, levels=[0.5], colors=[OUTLINE_RGB], linewidths=1.6)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color(FRAME_RGB)
        ax.set_title(title, color="white", fontsize=11)
        left, right, top, bottom = PANEL_LETTERS[title]
        style = {"color": LETTER_RGB, "fontsize": 13, "fontweight": "bold"}
        inset_x, inset_y = 0.015 * width, 0.015 * height
        ax.text(inset_x, height / 2, left, ha="left", va="center", **style)
        ax.text(width - inset_x, height / 2, right, ha="right", va="center", **style)
        ax.text(width / 2, inset_y, top, ha="center", va="top", **style)
        ax.text(width / 2, height - inset_y, bottom, ha="center", va="bottom", **style)
        bar = _scale_bar_mm(width)
        ax.add_artist(
            AnchoredSizeBar(
                ax.transData,
                bar,
                f"{bar} mm",
                loc="lower right",
                color=LETTER_RGB,
                frameon=False,
                size_vertical=max(height / 150, dr / 2),
                pad=0.4,
                fontproperties={"size": 9},
            )
        )
    if no_spleen:
        fig.text(
            0.5,
            0.5,
            NO_SPLEEN_TEXT,
            ha="center",
            va="center",
            fontsize=30,
            fontweight="bold",
            color=BANNER_RGB,
            bbox={"facecolor": "black", "alpha": 0.7, "edgecolor": BANNER_RGB},
        )
    lines = list(caption) + [f"CT window W {WINDOW_WIDTH:g} / L {WINDOW_LEVEL:g} HU"]
    fig.text(0.5, 0.015, "\n".join(lines), ha="center", va="bottom", color="white", fontsize=10)
    fig.subplots_adjust(bottom=0.05 + 0.045 * len(lines))
    output = Path(output_file)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, format="png", facecolor="black")
    logger.info("preview %s (planes s/p/l %s%s)", output, centre, ", no spleen" if no_spleen else "")
    return output

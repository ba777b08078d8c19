"""The preview picture read back numerically: phantoms with a known left-sided spleen in several patient
positions, through the same DICOM geometry path the app's preview operator uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from ahi_connector.geometry import SlicePlane, compute_geometry
from ahi_connector.preview import render_preview
from tests.app.preview_checks import banner_pixels, check_preview_orientation, outline_pixels, read_rgb

SHAPE = (40, 112, 112)
SPACING = (5.0, 3.0, 3.0)


def _dicom_volume(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """HU volume in the geometry module's slice order, its affine, and that order (input index per slice)."""
    datasets = [pydicom.dcmread(p) for p in paths]
    geometry = compute_geometry(
        [
            SlicePlane(
                label=str(p),
                position=tuple(float(v) for v in ds.ImagePositionPatient),
                orientation=tuple(float(v) for v in ds.ImageOrientationPatient),
                pixel_spacing=tuple(float(v) for v in ds.PixelSpacing),
            )
            for p, ds in zip(paths, datasets, strict=True)
        ]
    )
    order = list(geometry.order)
    hu = np.stack(
        [
            datasets[i].pixel_array * float(datasets[i].RescaleSlope) + float(datasets[i].RescaleIntercept)
            for i in order
        ]
    ).astype(np.float32)
    return hu, geometry.affine, order


@pytest.mark.parametrize(("seed", "position", "tilt"), [(3, "FFS", 0.0), (5, "HFP", 0.0), (7, "HFS", 9.0)])
def test_left_sided_spleen_appears_on_the_image_right_in_every_patient_position(
    tmp_path: Path, seed: int, position: str, tilt: float
) -> None:
    from model.phantoms import generate_phantom, write_dicom_series

    phantom = generate_phantom(seed, shape=SHAPE, spacing=SPACING, patient_position=position, tilt_deg=tilt)
    paths = write_dicom_series(phantom, tmp_path / "ct")
    hu, affine, order = _dicom_volume(paths)
    png = render_preview(hu, affine, tmp_path / "preview.png", mask=phantom.label[order], caption=["test"])
    measured = check_preview_orientation(
        png,
        phantom.hu,
        phantom.label,
        phantom.geometry.affine_lps(),
        slab_mm=max(SPACING),
        checked=("outline",) if tilt else ("outline", "bone"),
    )
    # The radiological convention in words: the left-sided spleen on the axial image's right half, the
    # spine in the axial image's lower (posterior) half.
    assert measured["axial"]["outline"][0] > 0.5
    assert tilt or measured["axial"]["bone"][1] > 0.5
    assert measured["coronal"]["outline"][0] > 0.5


def test_empty_mask_gives_the_no_spleen_banner_and_no_mask_gives_a_plain_series_picture(
    tmp_path: Path,
) -> None:
    from model.phantoms import generate_phantom

    phantom = generate_phantom(4, shape=SHAPE, spacing=SPACING, patient_position="HFS", tilt_deg=0.0)
    g = phantom.geometry.affine_lps()
    affine = np.column_stack([g[:, 2], g[:, 1], g[:, 0], g[:, 3]])  # (slice, row, col) indices
    empty = read_rgb(
        render_preview(phantom.hu, affine, tmp_path / "e.png", mask=np.zeros_like(phantom.label))
    )
    plain = read_rgb(render_preview(phantom.hu, affine, tmp_path / "p.png"))
    assert banner_pixels(empty).sum() > 2000 and not outline_pixels(empty).any()
    assert banner_pixels(plain).sum() == 0 and not outline_pixels(plain).any()
    with pytest.raises(ValueError, match=r"mask shape \(2, 2, 2\) differs from the CT's"):
        render_preview(phantom.hu, affine, tmp_path / "x.png", mask=np.zeros((2, 2, 2)))


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_UNCR.dcm"])
def test_real_scanner_slice_is_drawn_the_radiological_way(tmp_path: Path, name: str) -> None:
    """A CT slice from a real scanner (pydicom-data), not made by our generator: a disc marked in the
    patient's left half (by its own ImagePosition/Orientation) is outlined in the axial view's right half."""
    from pydicom.data import get_testdata_file

    from app.operators.spleen_stl_operator import series_affine
    from tests.app.preview_checks import image_positions, panels

    ds = pydicom.dcmread(get_testdata_file(name))
    hu = (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).astype(np.float32)[None]
    affine = series_affine([ds])
    rows, cols = np.indices(hu.shape[1:])
    lps = np.tensordot(affine[:3, 1:3], np.stack([rows, cols]), axes=1) + affine[:3, 3, None, None]
    left = lps[0] > np.median(lps[0])  # LPS x grows toward the patient's left
    r0, c0 = (np.argwhere(left).mean(axis=0)).astype(int)
    disc = ((rows - r0) ** 2 + (cols - c0) ** 2 < (hu.shape[1] // 10) ** 2) & left
    png = render_preview(hu, affine, tmp_path / "p.png", mask=disc[None], caption=[name])
    axial = image_positions(panels(read_rgb(png))["axial"])
    assert axial["outline"][0] > 0.55
    plain = read_rgb(render_preview(hu, affine, tmp_path / "q.png"))
    assert not outline_pixels(plain).any()

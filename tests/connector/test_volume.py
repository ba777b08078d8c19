"""ImageSet → Volume against geometry and values computed from the synthetic writer's parameters."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from ahi_connector import AHIConfigError, SeriesNotFoundError
from ahi_connector.cli import main as ahi_export
from tests.connector.conftest import CASES


@pytest.mark.parametrize("name", ["ct_int16_12bit", "multiframe_signed"])
def test_volume_geometry_and_rescale(name, imported, exporter):
    case, spec = imported[name], CASES[name]
    vol = exporter.to_volume(case.datastore_id, case.image_set_id)
    source = np.concatenate([p.reshape(-1, spec.rows, spec.columns) for p in case.written.pixels])
    assert vol.shape == (spec.slices, spec.rows, spec.columns)
    assert vol.array.dtype == np.float32 and vol.rescaled
    np.testing.assert_array_equal(
        vol.array, source.astype(np.float32) * spec.rescale_slope + spec.rescale_intercept
    )
    assert vol.spacing == pytest.approx((spec.slice_spacing, *spec.pixel_spacing))
    assert vol.origin == pytest.approx(spec.origin)
    # writer: IOP [1,0,0,0,1,0], slice k at origin + k*slice_spacing along +z; DHW axes -> (z, y, x)
    k, j, i = spec.slices - 1, 3, 5
    expected = np.array(spec.origin) + [
        i * spec.pixel_spacing[1],
        j * spec.pixel_spacing[0],
        k * spec.slice_spacing,
    ]
    assert (vol.affine @ [k, j, i, 1])[:3] == pytest.approx(expected)
    assert vol.series_uid == case.written.series_uid and vol.image_set_id == case.image_set_id


def test_volume_without_rescale_keeps_stored_values(imported, exporter):
    case = imported["ct_int16_12bit"]
    vol = exporter.to_volume(case.datastore_id, case.image_set_id, rescale=False)
    assert vol.array.dtype == np.int16 and not vol.rescaled
    assert vol.rescale_intercept == (-1024.0,) * 6
    np.testing.assert_array_equal(vol.array, np.stack(case.written.pixels))
    assert vol.sop_instance_uids == tuple(case.written.sop_instance_uids)


def test_unknown_series_is_a_clear_error(imported, exporter):
    case = imported["ct_int16_12bit"]
    with pytest.raises(SeriesNotFoundError, match=rf"series 9\.9 is not in image set {case.image_set_id}"):
        exporter.to_volume(case.datastore_id, case.image_set_id, "9.9")
    with pytest.raises(AHIConfigError, match=r"decoder='fastest' is not one of"):
        type(exporter)(exporter.client, decoder="fastest")


def test_cli_exports_dicom_and_nifti(imported, ahi_local, tmp_path, monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    case = imported["multiframe_signed"]
    base = [case.datastore_id, case.image_set_id, "--endpoint-url", ahi_local, "--region", "us-east-1"]
    assert ahi_export([*base, "-o", str(tmp_path / "dcm")]) == 0
    assert len(list((tmp_path / "dcm").rglob("*.dcm"))) == 1
    assert ahi_export([*base, "-o", str(tmp_path / "nii"), "--format", "nifti"]) == 0
    img = nib.load(next((tmp_path / "nii").glob("*.nii.gz")))
    assert img.shape == (64, 64, 5)
    # RAS affine: voxel (i, j, k) -> LPS origin + ..., x and y negated
    assert img.affine @ [0, 0, 1, 1] == pytest.approx([24.0, 24.0, 102.5, 1.0])
    assert (
        ahi_export([case.datastore_id, "0" * 32, "--endpoint-url", ahi_local, "-o", str(tmp_path / "x")]) == 2
    )


def test_cli_preview_writes_the_series_picture_for_grey_and_colour_series(
    imported, ahi_local, tmp_path, monkeypatch
):
    from tests.app.preview_checks import banner_pixels, outline_pixels, panels, read_rgb

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    grey, colour = imported["ct_int16_12bit"], imported["rgb_native"]
    for case, fmt in ((grey, "dicom"), (grey, "npz"), (colour, "dicom")):
        out = tmp_path / f"{case.image_set_id}-{fmt}"
        base = [case.datastore_id, case.image_set_id, "--endpoint-url", ahi_local, "--region", "us-east-1"]
        assert ahi_export([*base, "-o", str(out), "--format", fmt, "--preview"]) == 0
        pictures = list(out.glob("*.preview.png"))
        if case is colour:  # no soft-tissue window for an RGB series: no picture, and the export still works
            assert pictures == [] and list(out.rglob("*.dcm"))
            continue
        (picture,) = pictures
        assert picture.name == f"{case.written.series_uid}.preview.png"
        rgb = read_rgb(picture)
        assert rgb.shape == (480, 1200, 3)
        assert not outline_pixels(rgb).any() and banner_pixels(rgb).sum() == 0  # no mask: a plain picture
        assert all(panel.max() > 0 for panel in panels(rgb).values())

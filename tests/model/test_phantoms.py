"""Phantom generator: determinism, DICOM validity, and image/label/geometry alignment checked from the
files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from model.phantoms import generate_phantom, main, write_dicom_series, write_label
from model.scan_geometry import PatientPosition, ScanGeometry

SMALL = {"shape": (24, 96, 96), "spacing": (5.0, 4.0, 4.0)}


def test_same_seed_same_phantom_other_seed_differs() -> None:
    a = generate_phantom(11, **SMALL)
    b = generate_phantom(11, **SMALL)
    c = generate_phantom(12, **SMALL)
    assert np.array_equal(a.stored, b.stored) and np.array_equal(a.label, b.label)
    assert a.spleen_volume_ml == b.spleen_volume_ml
    assert not np.array_equal(a.stored, c.stored)


def _read_series(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def _lps_of_voxels(datasets: list[pydicom.Dataset], kji: np.ndarray) -> np.ndarray:
    """LPS mm of [slice, row, col] indices using only the DICOM headers (slices ordered by InstanceNumber)."""
    iop = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    dy, dx = (float(v) for v in datasets[0].PixelSpacing)
    ipp = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    k, j, i = kji[:, 0], kji[:, 1], kji[:, 2]
    return ipp[k] + np.outer(i * dx, row_dir) + np.outer(j * dy, col_dir)


@pytest.mark.parametrize("position", list(PatientPosition))
def test_dicom_and_label_agree_and_spleen_is_on_patient_left(
    tmp_path: Path, position: PatientPosition
) -> None:
    ph = generate_phantom(
        21, shape=(30, 96, 96), spacing=(5.0, 4.0, 4.0), patient_position=position, tilt_deg=6
    )
    paths = write_dicom_series(ph, tmp_path / "dicom")
    label_path, _ = write_label(ph, tmp_path)
    datasets = sorted(_read_series(tmp_path / "dicom"), key=lambda d: int(d.InstanceNumber))
    assert len(paths) == len(datasets) == 30
    pixels = np.stack([d.pixel_array for d in datasets])
    assert np.array_equal(pixels, ph.stored)
    hu = pixels * float(datasets[0].RescaleSlope) + float(datasets[0].RescaleIntercept)

    label_img = nib.load(str(label_path))
    label_ijk = np.asarray(label_img.dataobj)
    ijk = np.argwhere(label_ijk > 0)
    assert len(ijk) > 0
    # label voxel -> RAS via the NIfTI affine -> LPS; must equal the DICOM position of the same [k, j, i]
    # voxel
    ras = nib.affines.apply_affine(label_img.affine, ijk)
    lps_from_nifti = ras * np.array([-1, -1, 1])
    lps_from_dicom = _lps_of_voxels(datasets, ijk[:, ::-1])
    np.testing.assert_allclose(lps_from_nifti, lps_from_dicom, atol=1e-3)
    # anatomy: spleen centroid on the patient's left (+x in LPS), in soft-tissue HU
    assert lps_from_dicom[:, 0].mean() > 40.0
    spleen_hu = hu[tuple(ijk[:, ::-1].T)]
    assert 20.0 < float(np.median(spleen_hu)) < 160.0


def test_dicom_attributes_are_valid_ct(tmp_path: Path) -> None:
    ph = generate_phantom(5, shape=(8, 64, 64), spacing=(5.0, 6.0, 6.0))
    write_dicom_series(ph, tmp_path)
    datasets = _read_series(tmp_path)
    required = [
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
        "Modality",
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
        "SeriesNumber",
        "InstanceNumber",
        "PositionReferenceIndicator",
        "ImageType",
        "PixelSpacing",
        "ImageOrientationPatient",
        "ImagePositionPatient",
        "SliceThickness",
        "RescaleIntercept",
        "RescaleSlope",
        "KVP",
        "AcquisitionNumber",
        "PatientPosition",
        "Manufacturer",
    ]
    for ds in datasets:
        missing = [k for k in required if k not in ds]
        assert not missing, f"{ds.SOPInstanceUID} lacks {missing}"
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.Modality == "CT"
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert int(ds.pixel_array.max()) <= 4095
    assert len({d.SOPInstanceUID for d in datasets}) == len(datasets)
    assert len({d.FrameOfReferenceUID for d in datasets}) == 1
    assert len({d.SeriesInstanceUID for d in datasets}) == 1
    normal = np.cross(*np.reshape(np.array(datasets[0].ImageOrientationPatient, float), (2, 3)))
    pos = sorted(float(np.dot(normal, np.array(d.ImagePositionPatient, float))) for d in datasets)
    np.testing.assert_allclose(np.diff(pos), float(datasets[0].SliceThickness), atol=1e-3)


def test_spleen_volumes_span_the_clinical_range() -> None:
    volumes = []
    for seed in range(6):
        ph = generate_phantom(seed, shape=(64, 128, 128), spacing=(5.0, 3.2, 3.2))
        volumes.append(ph.spleen_volume_ml)
        # binary label volume tracks the partial-volume truth
        assert abs(ph.label_volume_ml - ph.spleen_volume_ml) / ph.spleen_volume_ml < 0.08
    assert all(40.0 < v < 560.0 for v in volumes), volumes
    assert max(volumes) / min(volumes) > 1.5, volumes


def test_random_geometry_is_in_the_stated_ranges() -> None:
    from model.phantoms import sample_geometry_params

    for seed in range(40):
        p = sample_geometry_params(np.random.default_rng(seed))
        nz, ny, nx = p["shape"]
        dz, dy, dx = p["spacing"]
        assert 256 <= nx == ny <= 512 and 40 <= nz <= 300
        assert 0.6 <= dx == dy <= 0.95 and 1.0 <= dz <= 5.0


def test_geometry_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="spacing must be 3 positive mm values"):
        ScanGeometry(
            shape=(1, 2, 2), spacing=(1.0, 0.0, 1.0), origin=(0, 0, 0), row_dir=(1, 0, 0), col_dir=(0, 1, 0)
        )
    with pytest.raises(ValueError, match="must be orthonormal"):
        ScanGeometry(
            shape=(1, 2, 2), spacing=(1.0, 1.0, 1.0), origin=(0, 0, 0), row_dir=(1, 0, 0), col_dir=(1, 0, 0)
        )


def test_cli_writes_series_label_and_info(tmp_path: Path) -> None:
    assert main([str(tmp_path), "--seeds", "3-4", "--shape", "8,48,48", "--spacing", "5,8,8"]) == 0
    for seed in (3, 4):
        out = tmp_path / f"phantom_{seed:05d}"
        assert len(list((out / "dicom").glob("*.dcm"))) == 8
        assert (out / "label.nii.gz").is_file() and (out / "phantom.json").is_file()
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--shape", "8,48"])

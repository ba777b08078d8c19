"""DICOM SEG conformance: the SEGs the product's writer (SpleenSegWriterOperator, the code every app run
uses) makes from the demo phantom series, an oblique series, FFS and HFP series and a multi-frame source
pass ``dciodvfy`` without errors; the only warnings allowed are
:data:`tests.support.dciodvfy.ACCEPTED_WARNINGS`.

The masks are the phantoms' own spleen labels (no inference needed to exercise the writer); the SEGs of real
app runs are checked the same way by :func:`tests.app.seg_checks.check_seg`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from app.operators.ahi_data_loader_operator import studies_from_datasets
from tests.support.dciodvfy import assert_conformant, require_dciodvfy

# The demo's phantom (scripts/demo.py defaults), then the geometries a scanner produces besides HFS axial.
PHANTOMS: dict[str, dict[str, Any]] = {
    "demo_hfs": {"seed": 3, "shape": (48, 128, 128), "spacing": (4.0, 2.5, 2.5)},
    "oblique_tilt_12": {"seed": 5, "shape": (24, 96, 96), "spacing": (3.0, 3.0, 3.0), "tilt_deg": 12.0},
    "ffs": {"seed": 7, "shape": (24, 96, 96), "spacing": (3.0, 3.0, 3.0), "patient_position": "FFS"},
    "hfp": {"seed": 9, "shape": (24, 96, 96), "spacing": (3.0, 3.0, 3.0), "patient_position": "HFP"},
}


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_dciodvfy()
    from monai.deploy.core import Fragment

    from app.bundle_model import BundleModel
    from app.operators.spleen_seg_writer_operator import SpleenSegWriterOperator
    from model import SOURCE_BUNDLE_DIR

    identity = BundleModel(SOURCE_BUNDLE_DIR, device="cpu").identity
    out = tmp_path_factory.mktemp("seg-writer")
    return SpleenSegWriterOperator(Fragment(), model=identity, output_folder=out, name="seg_writer")


def _write_seg(writer: Any, datasets: list[pydicom.Dataset], mask: np.ndarray, out: Path) -> Path:
    series = studies_from_datasets(datasets)[0].get_all_series()[0]
    writer.create_dicom_seg(mask.astype(np.uint8), series, out)
    (seg,) = out.glob("*.dcm")
    return seg


@pytest.mark.parametrize("name", list(PHANTOMS))
def test_seg_of_phantom_series_passes_dciodvfy(writer: Any, name: str, tmp_path: Path) -> None:
    from model.phantoms import generate_phantom, write_dicom_series

    params = dict(PHANTOMS[name])
    phantom = generate_phantom(params.pop("seed"), **params)
    paths = write_dicom_series(phantom, tmp_path / "ct")
    datasets = [pydicom.dcmread(p) for p in paths]
    order = [str(ds.SOPInstanceUID) for ds in datasets]
    series = studies_from_datasets(datasets)[0].get_all_series()[0]
    ordered = [
        order.index(str(s.get_native_sop_instance().SOPInstanceUID)) for s in series.get_sop_instances()
    ]
    assert phantom.label.any()
    seg = _write_seg(writer, datasets, phantom.label[ordered], tmp_path / "seg")
    assert_conformant(seg)


def test_seg_of_a_multiframe_source_passes_dciodvfy(writer: Any, tmp_path: Path) -> None:
    from tests.conformance.edge_cases import write_cases

    (path,) = [p for p in write_cases(tmp_path / "src") if p.name == "enhanced_ct.dcm"]
    source = pydicom.dcmread(path)
    mask = np.zeros((int(source.NumberOfFrames), source.Rows, source.Columns), np.uint8)
    mask[1, 10:30, 10:30] = 1
    seg = _write_seg(writer, [source], mask, tmp_path / "seg")
    assert pydicom.dcmread(seg).NumberOfFrames >= 1
    assert_conformant(seg)

"""SpleenSTLOperator: surface mesh (binary STL, LPS millimetres) of the spleen mask.

Why not the SDK's ``STLConversionOperator``: it meshes every non-zero label (its ``class_id`` filter is
applied to an array it then does not use), fails on an empty mask, treats the (slice, row, column) array
indices as (x, y, z) without the series origin (the mesh does not overlay the CT), and maps every vertex to
patient space in a Python loop. Here the mesh is the largest connected component of the binary spleen mask,
built with marching cubes on the mask's bounding box and placed with the series affine from
:mod:`ahi_connector.geometry` (the project's geometry module), so it overlays the source CT in a viewer that
reads STL as LPS (3D Slicer's default).

Named inputs:
    spleen_mask: binary ``Image`` (DHW), slices in the SDK volume operator's order (ascending along the
    normal).
    study_selected_series_list: the selected series (its instances give the geometry).
Named output:
    stl_path: ``str`` path of the STL file, or ``""`` when no mesh was written (empty mask, or slices that
    do not
    form one regular stack; the reason is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec
from pydicom.dataset import Dataset

from ahi_connector.errors import GeometryError
from ahi_connector.geometry import SlicePlane, compute_geometry

from ..components import largest_component
from ..run_record import STAGE_STL, RunRecord

logger = logging.getLogger(__name__)

SMOOTHING_ITERATIONS = 20


def series_affine(datasets: Sequence[Dataset]) -> np.ndarray:
    """4x4 affine mapping (slice, row, column) indices of the sorted series to LPS mm (raises
    GeometryError)."""

    def floats(value: Any, n: int) -> tuple[float, ...] | None:
        return None if value is None else tuple(float(v) for v in value)[:n]

    planes = [
        SlicePlane(
            label=f"instance {ds.get('SOPInstanceUID', '?')}",
            position=floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
            orientation=floats(ds.get("ImageOrientationPatient"), 6),  # type: ignore[arg-type]
            pixel_spacing=floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
        )
        for ds in datasets
    ]
    return compute_geometry(planes).affine


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every non-zero voxel (one pass per axis over the projections), or None."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=others))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def spleen_mesh(mask: np.ndarray, affine: np.ndarray, smooth: bool = True) -> Any:
    """``trimesh.Trimesh`` (LPS mm) of the largest component of a DHW binary mask, or None when it is
    empty. Only the mask's bounding box is labelled and meshed (the spleen is a few % of a CT volume)."""
    import trimesh
    from skimage.measure import marching_cubes

    box = _bounding_box(np.asarray(mask))
    if box is None:
        return None
    component = largest_component(np.asarray(mask)[box] > 0)
    lo = np.array([b.start for b in box])
    padded = np.pad(component.astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, level=0.5)
    verts += lo - 1  # back to indices of the full array
    lps = verts @ affine[:3, :3].T + affine[:3, 3]
    mesh = trimesh.Trimesh(vertices=lps, faces=faces, process=True)
    if smooth:
        trimesh.smoothing.filter_taubin(mesh, iterations=SMOOTHING_ITERATIONS)
    trimesh.repair.fix_normals(mesh)
    return mesh


def write_spleen_stl(mask: np.ndarray, datasets: Sequence[Dataset], output_file: Path) -> Path | None:
    """Write the spleen STL; None (no file, reason logged) for an empty mask or an irregular slice stack."""
    if not np.any(mask):
        logger.info("spleen mask is empty: no STL written")
        return None
    try:
        affine = series_affine(datasets)
    except GeometryError as exc:
        logger.warning("no STL written: the series is not one regular stack: %s", exc)
        return None
    mesh = spleen_mesh(mask, affine)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(str(output_file), file_type="stl")
    return output_file


class SpleenSTLOperator(Operator):
    """See the module doc."""

    INPUT_MASK = "spleen_mask"
    INPUT_SELECTED_SERIES = "study_selected_series_list"
    OUTPUT_STL_PATH = "stl_path"

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        output_file: Path,
        record: RunRecord | None = None,
        **kwargs: Any,
    ) -> None:
        self._output_file = Path(output_file)
        self._record = record if record is not None else RunRecord()
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_MASK)
        spec.input(self.INPUT_SELECTED_SERIES)
        spec.output(self.OUTPUT_STL_PATH)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        mask = op_input.receive(self.INPUT_MASK)
        selected = op_input.receive(self.INPUT_SELECTED_SERIES)
        series = selected[0].selected_series[0].series
        datasets = [sop.get_native_sop_instance() for sop in series.get_sop_instances()]
        with self._record.stage(STAGE_STL):
            written = write_spleen_stl(np.asarray(mask.asnumpy()), datasets, self._output_file)
        op_output.emit(str(written) if written else "", self.OUTPUT_STL_PATH)

"""Direct ImageSet → 3-D volume, without building DICOM datasets.

Axis order is (slices, rows, columns) = DHW, slices sorted by increasing position along the slice normal (row
cosine × column cosine); coordinates are DICOM LPS in mm. With ``rescale=True`` (default) and a Rescale
Slope/Intercept present, the array is float32 ``stored * slope + intercept`` (e.g. Hounsfield units for CT);
otherwise it keeps the stored integer type and ``rescaled`` is False (slope/intercept are still reported).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .decoders.base import FrameSpec
from .errors import GeometryError, MetadataError
from .geometry import SlicePlane, VolumeGeometry, compute_geometry, slice_normal
from .metadata import FrameInfo, ImageSetMetadata, InstanceInfo, SeriesInfo, as_floats, as_list


@dataclass
class Volume:
    """A regular 3-D image. ``array`` is DHW (slices, rows, cols) [+ samples for colour], LPS geometry."""

    array: np.ndarray
    geometry: VolumeGeometry
    datastore_id: str
    image_set_id: str
    series_uid: str
    study_uid: str | None
    modality: str | None
    sop_instance_uids: tuple[str, ...]  # per slice
    frame_ids: tuple[str, ...]  # per slice
    rescaled: bool
    rescale_slope: tuple[float, ...] = field(repr=False, default=())  # per slice
    rescale_intercept: tuple[float, ...] = field(repr=False, default=())

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(slice, row, column) spacing in mm, matching the array's DHW axes."""
        return self.geometry.spacing

    @property
    def origin(self) -> tuple[float, float, float]:
        """LPS position (mm) of voxel (0, 0, 0) = Image Position (Patient) of the first sorted slice."""
        return self.geometry.origin

    @property
    def direction(self) -> np.ndarray:
        """3×3, column a = LPS unit vector of array axis a (DHW)."""
        return self.geometry.direction

    @property
    def affine(self) -> np.ndarray:
        """4×4 from (d, h, w, 1) indices to LPS mm."""
        return self.geometry.affine

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


@dataclass(frozen=True)
class SlicePlan:
    """What to fetch for each slice of a volume, in sorted order, and how to convert it."""

    geometry: VolumeGeometry
    spec: FrameSpec
    instances: tuple[InstanceInfo, ...]
    frames: tuple[FrameInfo, ...]
    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]
    has_rescale: bool


def _first_item(ds: Mapping[str, Any] | None, keyword: str) -> Mapping[str, Any]:
    items = as_list((ds or {}).get(keyword))
    return items[0] if items and isinstance(items[0], Mapping) else {}


def _frame_attrs(merged: Mapping[str, Any], frame_index: int, multi: bool) -> dict[str, Any]:
    """IPP, IOP, PixelSpacing, RescaleSlope/Intercept for one frame (functional groups win for
    multi-frame)."""
    out = {
        k: merged.get(k)
        for k in (
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
            "RescaleSlope",
            "RescaleIntercept",
        )
    }
    if not multi:
        return out
    shared = _first_item(merged, "SharedFunctionalGroupsSequence")
    per_frame = as_list(merged.get("PerFrameFunctionalGroupsSequence"))
    frame = (
        per_frame[frame_index]
        if frame_index < len(per_frame) and isinstance(per_frame[frame_index], Mapping)
        else {}
    )
    for group in (shared, frame):
        pos = _first_item(group, "PlanePositionSequence").get("ImagePositionPatient")
        ori = _first_item(group, "PlaneOrientationSequence").get("ImageOrientationPatient")
        meas = _first_item(group, "PixelMeasuresSequence")
        pvt = _first_item(group, "PixelValueTransformationSequence")
        for key, val in (
            ("ImagePositionPatient", pos),
            ("ImageOrientationPatient", ori),
            ("PixelSpacing", meas.get("PixelSpacing")),
            ("RescaleSlope", pvt.get("RescaleSlope")),
            ("RescaleIntercept", pvt.get("RescaleIntercept")),
        ):
            if val is not None:
                out[key] = val
    if not _first_item(frame, "PlanePositionSequence").get("ImagePositionPatient"):
        out["ImagePositionPatient"] = _stacked_position(merged, out, frame_index)
    return out


def _stacked_position(merged: Mapping[str, Any], attrs: Mapping[str, Any], frame_index: int) -> Any:
    """Legacy multi-frame without per-frame positions: frame k at IPP + k * SpacingBetweenSlices * normal.

    Returns None (→ a clear GeometryError) when the instance gives no Spacing Between Slices.
    """
    ipp = as_floats(attrs.get("ImagePositionPatient"), 3)
    iop = as_floats(attrs.get("ImageOrientationPatient"), 6)
    gap = as_floats(merged.get("SpacingBetweenSlices"), 1)
    if ipp is None or iop is None or gap is None:
        return None
    return list(np.asarray(ipp) + frame_index * gap[0] * slice_normal(iop))


def plan_series(meta: ImageSetMetadata, series: SeriesInfo) -> SlicePlan:
    """Sort and validate the frames of one series into a volume plan (no pixels fetched)."""
    planes: list[SlicePlane] = []
    entries: list[tuple[InstanceInfo, FrameInfo, float | None, float | None]] = []
    spec: FrameSpec | None = None
    base = {**meta.patient, **meta.study, **series.dicom}
    for inst in series.instances:
        if not inst.frames:
            continue
        merged = {**base, **inst.dicom}
        inst_spec = inst.frame_spec()
        if spec is None:
            spec = inst_spec
        elif (inst_spec.rows, inst_spec.columns, inst_spec.samples_per_pixel) != (
            spec.rows,
            spec.columns,
            spec.samples_per_pixel,
        ):
            raise GeometryError(
                f"instance {inst.sop_instance_uid} is "
                f"{inst_spec.rows}x{inst_spec.columns}x{inst_spec.samples_per_pixel}"
                f" but series {series.series_uid} started with "
                f"{spec.rows}x{spec.columns}x{spec.samples_per_pixel}"
            )
        multi = len(inst.frames) > 1
        for frame in inst.frames:
            attrs = _frame_attrs(merged, frame.index, multi)
            label = f"frame #{frame.index + 1} ({frame.id}) of instance {inst.sop_instance_uid}"
            orientation = as_floats(attrs["ImageOrientationPatient"], 6)
            iop = None
            if orientation:
                rx, ry, rz, cx, cy, cz = orientation
                iop = (rx, ry, rz, cx, cy, cz)
            position = as_floats(attrs["ImagePositionPatient"], 3)
            spacing = as_floats(attrs["PixelSpacing"], 2)
            planes.append(
                SlicePlane(
                    label,
                    (position[0], position[1], position[2]) if position else None,
                    iop,
                    (spacing[0], spacing[1]) if spacing else None,
                )
            )
            slope, intercept = as_floats(attrs["RescaleSlope"], 1), as_floats(attrs["RescaleIntercept"], 1)
            entries.append((inst, frame, slope[0] if slope else None, intercept[0] if intercept else None))
    if spec is None:
        raise MetadataError(
            f"series {series.series_uid} of image set {meta.image_set_id} has no image frames"
        )
    default_dz = as_floats(base.get("SpacingBetweenSlices") or base.get("SliceThickness"), 1)
    where = f"series {series.series_uid} of image set {meta.image_set_id} (datastore {meta.datastore_id})"
    try:
        geometry = compute_geometry(planes, default_dz[0] if default_dz else None)
    except GeometryError as exc:
        raise GeometryError(f"{where}: {exc}") from exc
    ordered = [entries[i] for i in geometry.order]
    has_rescale = any(e[2] is not None or e[3] is not None for e in ordered)
    return SlicePlan(
        geometry=geometry,
        spec=spec,
        instances=tuple(e[0] for e in ordered),
        frames=tuple(e[1] for e in ordered),
        slopes=tuple(1.0 if e[2] is None else e[2] for e in ordered),
        intercepts=tuple(0.0 if e[3] is None else e[3] for e in ordered),
        has_rescale=has_rescale,
    )


def allocate(plan: SlicePlan, rescale: bool) -> np.ndarray:
    spec = plan.spec
    dtype = np.float32 if (rescale and plan.has_rescale) else spec.dtype
    return np.empty((len(plan.frames), *spec.shape), dtype=dtype)

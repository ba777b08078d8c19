"""AHISeriesToVolumeOperator: the SDK's DICOMSeriesToVolumeOperator with its pixels fetched straight from AHI.

On the serving path the AHI loader emits attribute-only instances (metadata, no pixel data, no frame fetched),
the selector chooses the series from them, and this operator builds the SDK ``Image`` of the chosen series:
the SDK's own code sorts the slices and computes the metadata and affines (``prepare_series``,
``create_metadata``, unchanged, from the same attributes), and only ``generate_voxel_data`` differs: the
frames of exactly the sorted instances are fetched and decoded into one preallocated array
(``ImageSetExporter.frames_array``), then rescaled into the dtype the SDK would choose. No P10 dataset and no
per-slice pixel array is built, and an image set whose series is rejected never has a frame fetched.

Same voxels as the SDK: for the common case (no Modality/Presentation LUT, every slice with Rescale Slope 1
and an integer Intercept, or no rescale at all) the result is computed with integer arithmetic in one pass
into the dtype the SDK's per-slice rules give (uint16 when all values are > 0, else int16, else float32);
any other slice goes through the SDK's exact per-slice rule (pydicom ``apply_rescale`` and
``apply_presentation_lut``, then its casts). ``tests/app`` compares both paths voxel for voxel.

Named input:
    study_selected_series_list: the selected series (attribute-only instances are enough).
Named output:
    image: ``Image`` (DHW), as from DICOMSeriesToVolumeOperator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from monai.deploy.core import Fragment
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from pydicom.dataset import Dataset
from pydicom.pixels import apply_presentation_lut, apply_rescale

from ..errors import AppError
from ..run_record import STAGE_FETCH, STAGE_VOLUME, RunRecord

if TYPE_CHECKING:
    from ahi_connector.exporter import ImageSetExporter

logger = logging.getLogger(__name__)

#: Intercepts up to this magnitude keep 16-bit stored values + intercept exact in float32 (2**24).
_MAX_EXACT_INTERCEPT = 2**23


def sdk_slice_voxels(pixels: np.ndarray, ds: Dataset) -> np.ndarray:
    """One slice exactly as DICOMSeriesToVolumeOperator.generate_voxel_data converts it (SDK 4.0)."""
    out = apply_presentation_lut(apply_rescale(pixels, ds), ds)
    if out.dtype in (np.uint8, np.uint16):
        return out
    if np.all(out > 0) and np.array_equal(out, out.astype(np.uint16)):
        return out.astype(np.uint16)
    if np.array_equal(out, out.astype(np.int16)):
        return out.astype(np.int16)
    if np.array_equal(out, out.astype(np.float32)):
        return out.astype(np.float32)
    return out


def _integer_intercepts(datasets: Sequence[Dataset], stored: np.ndarray) -> np.ndarray | None:
    """Per-slice integer intercepts when every slice is a plain integer shift (slope 1, or no rescale at
    all on every slice), else None (the general path handles it)."""
    if stored.dtype.kind not in "iu" or stored.dtype.itemsize > 2:
        return None
    has = ["RescaleSlope" in ds and "RescaleIntercept" in ds for ds in datasets]
    if any(has) and not all(has):
        return None
    out = np.zeros(len(datasets), dtype=np.int64)
    for k, ds in enumerate(datasets):
        if ds.get("ModalityLUTSequence") or "PresentationLUTSequence" in ds:
            return None
        if str(ds.get("PresentationLUTShape", "IDENTITY") or "IDENTITY").strip().upper() != "IDENTITY":
            return None
        if has[k]:
            try:
                slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            except (TypeError, ValueError):
                return None
            if slope != 1.0 or intercept != int(intercept) or abs(intercept) > _MAX_EXACT_INTERCEPT:
                return None
            out[k] = int(intercept)
    if not all(has):
        return None if stored.dtype in (np.uint8, np.uint16) else out  # unchanged dtype: SDK keeps it
    return out


def _shift_dtype(lo: int, hi: int) -> np.dtype:
    """The SDK's cast for an integer-valued slice with values in [lo, hi]."""
    if lo > 0 and hi <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
        return np.dtype(np.int16)
    return np.dtype(np.float32)


def sdk_voxels(stored: np.ndarray, datasets: Sequence[Dataset]) -> np.ndarray:
    """The volume DICOMSeriesToVolumeOperator would build from these sorted slices' stored pixels. In the
    common case the result reuses ``stored``'s memory (it is overwritten); otherwise a new array."""
    if stored.shape[0] != len(datasets):
        raise AppError(f"{stored.shape[0]} slices of pixels for {len(datasets)} instances")
    shifts = _integer_intercepts(datasets, stored) if stored.ndim == 3 else None
    if shifts is not None:
        lows = stored.min(axis=(1, 2)).astype(np.int64) + shifts
        highs = stored.max(axis=(1, 2)).astype(np.int64) + shifts
        dtypes = {_shift_dtype(int(lo), int(hi)) for lo, hi in zip(lows, highs, strict=True)}
        if len(dtypes) == 1:
            (dtype,) = dtypes
            if dtype.kind in "iu" and dtype.itemsize == stored.dtype.itemsize:
                # In place: every result fits ``dtype``, so adding modulo 2**bits in the stored type gives its
                # exact bit pattern; no second volume-sized array (fresh pages cost ~0.5 s per 150 MB here).
                wrap = (shifts % (1 << (8 * stored.dtype.itemsize))).astype(
                    stored.dtype.str.replace("i", "u")
                )
                np.add(stored.view(wrap.dtype), wrap[:, None, None], out=stored.view(wrap.dtype))
                return stored.view(dtype)
            out = np.empty(stored.shape, dtype=dtype)
            work = np.int32 if dtype != np.float32 else np.float32
            np.add(stored, shifts.astype(work)[:, None, None], out=out, dtype=work, casting="unsafe")
            return out
    first = sdk_slice_voxels(stored[0], datasets[0])
    out = np.empty((len(datasets), *first.shape), dtype=first.dtype)
    out[0] = first
    for k in range(1, len(datasets)):
        out[k] = sdk_slice_voxels(stored[k], datasets[k])
    return out


class AHISeriesToVolumeOperator(DICOMSeriesToVolumeOperator):
    """See the module doc. ``exporter``: an ``ahi_connector.ImageSetExporter``; ``record``: the run's
    RunRecord, whose ``datastore_id`` / ``image_set_ids`` (set by the AHI loader) name where the series
    lives. Fetching is timed as ``fetch_decode``, the rest as ``volume``."""

    def __init__(
        self, fragment: Fragment, *args: Any, exporter: ImageSetExporter, record: RunRecord, **kwargs: Any
    ) -> None:
        self._exporter = exporter
        self._record = record
        super().__init__(fragment, *args, **kwargs)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        start = time.perf_counter()
        fetched_before = self._record.timings.get(STAGE_FETCH, 0.0)
        try:
            super().compute(op_input, op_output, context)
        finally:
            fetch = self._record.timings.get(STAGE_FETCH, 0.0) - fetched_before
            self._record.timings[STAGE_VOLUME] = (
                self._record.timings.get(STAGE_VOLUME, 0.0) + time.perf_counter() - start - fetch
            )

    def generate_voxel_data(self, series: Any) -> np.ndarray:
        datasets = [sop.get_native_sop_instance() for sop in series.get_sop_instances()]
        if not datasets:
            return np.array([])
        record = self._record
        if record.datastore_id is None or not record.image_set_ids:
            raise AppError("AHISeriesToVolumeOperator needs the AHI loader's datastore and image set IDs")
        uids = [str(ds.SOPInstanceUID) for ds in datasets]
        with record.stage(STAGE_FETCH), record.fetching(self._exporter):
            stored = self._exporter.frames_array(record.datastore_id, record.image_set_ids[0], uids)
        return sdk_voxels(stored, datasets)

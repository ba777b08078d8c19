"""``AHItoDICOM``: drop-in for the ``ahitodicominterface`` API, thin over :class:`ImageSetExporter`.

Differences that fix the anchor's defects: one persistent worker pool per object (no processes per call),
every series of an image set, every frame of multi-frame instances, pagination, frame-level retries, a
deadline instead of a hang, and errors raised (``AHIError`` subclasses) instead of logged-and-``None`` —
except ``getMetadata``, which keeps the anchor's ``None`` on failure (logged) for compatibility.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from .client import client_from_keys
from .errors import AHIError
from .exporter import ImageSetExporter

log = logging.getLogger(__name__)


class AHItoDICOM:
    """Same constructor and methods as the anchor, plus ``client=`` / ``endpoint_url=`` / ``region_name=``.

    ``fetcher_process_count`` sets the number of frame worker threads (default 16);
    ``dicomizer_process_count`` is accepted for compatibility and sets the openjpeg decoder's process count
    when ``decoder="openjpeg"``.
    """

    def __init__(
        self,
        aws_access_key: str | None = None,
        aws_secret_key: str | None = None,
        AHI_endpoint: str | None = None,
        fetcher_process_count: int | None = None,
        dicomizer_process_count: int | None = None,
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        decoder: str = "auto",
        deadline_s: float = 600.0,
    ) -> None:
        self.client = client or client_from_keys(
            aws_access_key, aws_secret_key, endpoint_url or AHI_endpoint, region_name
        )
        self.exporter = ImageSetExporter(
            self.client, decoder=decoder, max_workers=fetcher_process_count or 16, deadline_s=deadline_s
        )
        openjpeg = self.exporter.decoders.backends.get("openjpeg")
        if dicomizer_process_count and openjpeg is not None:
            openjpeg.processes = dicomizer_process_count  # type: ignore[attr-defined]

    def close(self) -> None:
        self.exporter.close()

    def __enter__(self) -> AHItoDICOM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def DICOMizeImageSet(self, datastore_id: str, image_set_id: str) -> list[Dataset]:
        """Every instance of every series of the image set, as pydicom Datasets sorted by Instance Number."""
        return list(self.exporter.to_datasets(datastore_id, image_set_id))

    def DICOMizeByStudyInstanceUID(self, datastore_id: str, study_instance_uid: str) -> list[Dataset]:
        out: list[Dataset] = []
        for image_set_id in self.exporter.find_image_sets_for_study(datastore_id, study_instance_uid):
            out += self.DICOMizeImageSet(datastore_id, image_set_id)
        return out

    def getMetadata(self, datastore_id: str, imageset_id: str, client: Any = None) -> dict[str, Any] | None:
        """The metadata JSON as a dict, or None (logged) when it cannot be read, like the anchor."""
        try:
            return dict(self.exporter.get_metadata(datastore_id, imageset_id).raw)
        except AHIError as exc:
            log.error("getMetadata(%s, %s) failed: %s", datastore_id, imageset_id, exc)
            return None

    def getImageSetToSeriesUIDMap(self, datastore_id: str, study_instance_uid: str) -> list[dict[str, Any]]:
        """One descriptor per series of every image set of the study (the anchor listed only the first)."""
        out = []
        for image_set_id in self.exporter.find_image_sets_for_study(datastore_id, study_instance_uid):
            meta = self.exporter.get_metadata(datastore_id, image_set_id)
            for series in meta.series.values():
                out.append(
                    {
                        "ImageSetId": image_set_id,
                        "SeriesNumber": series.dicom.get("SeriesNumber"),
                        "Modality": series.dicom.get("Modality"),
                        "SeriesDescription": series.dicom.get("SeriesDescription", ""),
                        "SeriesInstanceUID": series.series_uid,
                        "InstanceCount": len(series.instances),
                    }
                )
        return out

    def saveAsDICOM(self, ds: Dataset, destination: str = "./out") -> bool:
        """Write ``ds`` as ``<destination>/<SOPInstanceUID>.dcm`` (Part 10 with preamble)."""
        folder = Path(destination)
        folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        return True

    def saveAsPngPIL(self, ds: Dataset, destination: str) -> bool:
        """Save the (first frame of the) image as an 8-bit PNG, min–max scaled; MONOCHROME1 inverted."""
        from PIL import Image

        img = np.asarray(ds.pixel_array)
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            img = img[0]
        img = img.astype(np.float64)
        lo, hi = float(img.min()), float(img.max())
        scaled = np.zeros_like(img) if hi <= lo else (img - lo) / (hi - lo) * 255.0
        out = np.rint(scaled).astype(np.uint8)
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            out = 255 - out
        folder = os.path.dirname(destination)
        if folder:
            os.makedirs(folder, exist_ok=True)
        Image.fromarray(out).save(destination, "png")
        return True

"""Generated series in every input encoding the service supports, imported in one job and read back exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
)

from devstack.clients import ahi_client, s3_client
from devstack.importing import create_datastore
from devstack.synthetic import SeriesSpec, SyntheticSeries, write_series
from tests.local_ahi.roundtrip import MetadataCache, assert_round_trip, fetch_frame, import_files
from tests.support.pixels import decode_served


def _spec(name: str, **kw: Any) -> tuple[str, SeriesSpec]:
    return name, SeriesSpec(slices=kw.pop("slices", 3), rows=32, columns=40, **kw)


SPECS = dict(
    [
        _spec("explicit-int16-16bit", bits_stored=16),
        _spec("explicit-int16-12bit-rescale", bits_stored=12, rescale_intercept=-1024.0, rescale_slope=1.0),
        _spec("implicit-uint16-12bit", transfer_syntax=ImplicitVRLittleEndian, signed=False),
        _spec(
            "deflate-uint16-16bit",
            transfer_syntax=DeflatedExplicitVRLittleEndian,
            signed=False,
            bits_stored=16,
        ),
        _spec("explicit-uint8", bits_allocated=8, bits_stored=8, signed=False),
        _spec("explicit-int8", bits_allocated=8, bits_stored=8, signed=True),
        _spec("monochrome1", photometric="MONOCHROME1", signed=False),
        _spec("rgb-native", photometric="RGB", bits_allocated=8, bits_stored=8, signed=False),
        _spec(
            "rgb-rle",
            photometric="RGB",
            bits_allocated=8,
            bits_stored=8,
            signed=False,
            transfer_syntax=RLELossless,
        ),
        _spec("rle-int16", transfer_syntax=RLELossless),
        _spec("jpeg-lossless-int16-12bit", transfer_syntax=JPEGLosslessSV1),
        _spec("jpeg-lossless-uint16-16bit", transfer_syntax=JPEGLosslessSV1, signed=False, bits_stored=16),
        _spec("j2k-lossless-int16", transfer_syntax=JPEG2000Lossless),
        _spec("j2k-lossy-uint16", transfer_syntax=JPEG2000, signed=False),
        _spec(
            "jpeg-baseline-gray",
            transfer_syntax=JPEGBaseline8Bit,
            bits_allocated=8,
            bits_stored=8,
            signed=False,
        ),
        _spec(
            "jpeg-baseline-rgb",
            transfer_syntax=JPEGBaseline8Bit,
            photometric="RGB",
            bits_allocated=8,
            bits_stored=8,
            signed=False,
        ),
        _spec("multiframe-explicit", multiframe=True, slices=4),
        _spec("multiframe-j2k-lossless", multiframe=True, slices=3, transfer_syntax=JPEG2000Lossless),
        _spec("multiframe-rle-2frames", multiframe=True, slices=2, transfer_syntax=RLELossless),
    ]
)
LOSSLESS_CONTENT = "image/jph"
EXPECTED_CONTENT = {
    "j2k-lossy-uint16": "image/j2c",
    "jpeg-baseline-gray": "image/jpeg",
    "jpeg-baseline-rgb": "image/jpeg",
}


@pytest.fixture(scope="module")
def imported(ahi_local: str, moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ahi, s3 = ahi_client(ahi_local), s3_client(moto_s3)
    source = tmp_path_factory.mktemp("synthetic-source")
    series: dict[str, SyntheticSeries] = {
        name: write_series(source / name, spec) for name, spec in SPECS.items()
    }
    files = [p for s in series.values() for p in s.paths]
    datastore_id = create_datastore(ahi, "synthetic")
    result, by_path = import_files(ahi, s3, datastore_id, files, tmp_path_factory.mktemp("synthetic-stage"))
    return {"ahi": ahi, "series": series, "files": by_path, "result": result, "cache": MetadataCache(ahi)}


def test_one_image_set_per_series(imported: dict[str, Any]) -> None:
    result = imported["result"]
    assert result.job_status == "COMPLETED" and result.failure == []
    assert len(result.image_set_ids) == len(SPECS)
    for s in imported["series"].values():
        assert len({imported["files"][p].image_set_id for p in s.paths}) == 1


@pytest.mark.parametrize("name", list(SPECS))
def test_series_round_trip(imported: dict[str, Any], name: str) -> None:
    series: SyntheticSeries = imported["series"][name]
    ahi, cache = imported["ahi"], imported["cache"]
    for path, source_pixels in zip(series.paths, series.pixels, strict=True):
        entry = imported["files"][path]
        assert_round_trip(ahi, cache, entry, path)
        _, inst = cache.instances(entry.datastore_id, entry.image_set_id)[
            series.sop_instance_uids[series.paths.index(path)]
        ]
        frames = [source_pixels] if not series.spec.multiframe else list(source_pixels)
        assert len(inst["ImageFrames"]) == len(frames)
        for frame, expected in zip(inst["ImageFrames"], frames, strict=True):
            data, content_type = fetch_frame(ahi, entry.datastore_id, entry.image_set_id, frame["ID"])
            assert content_type == EXPECTED_CONTENT.get(name, LOSSLESS_CONTENT)
            if content_type == LOSSLESS_CONTENT:  # compare with the generator's own array, not only pydicom's
                assert np.array_equal(decode_served(data, content_type, expected), expected)


def test_synthetic_geometry_survives(imported: dict[str, Any]) -> None:
    series: SyntheticSeries = imported["series"]["explicit-int16-16bit"]
    entry = imported["files"][Path(series.paths[1])]
    restored, _ = imported["cache"].instances(entry.datastore_id, entry.image_set_id)[
        series.sop_instance_uids[1]
    ]
    assert [float(v) for v in restored.ImagePositionPatient] == [-24.0, -24.0, 102.5]
    assert [float(v) for v in restored.PixelSpacing] == [0.75, 0.75]
    assert restored.FrameOfReferenceUID and restored.ImageOrientationPatient == [1, 0, 0, 0, 1, 0]

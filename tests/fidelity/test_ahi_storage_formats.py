"""Stored frames as AHI stores them: HTJ2K lossless with RPCL progression (1.2.840.10008.1.2.4.202) by
default; JPEG 2000 lossless (1.2.840.10008.1.2.4.90, ``image/j2c``) in a datastore created with
``losslessStorageFormat=JPEG_2000_LOSSLESS``; and the connector reads both back to the original pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ahi_connector import ImageSetExporter
from ahi_connector.client import make_ahi_client
from devstack.clients import s3_client
from devstack.importing import import_folder
from devstack.synthetic import SeriesSpec, write_series
from tests.connector.conftest import dummy_session
from tests.fidelity.conftest import wait_datastore_active
from tests.support.ahi_metadata import read_metadata

#: COD marker (FF52) Lcod(2) Scod(1), then SGcod's first byte: the progression order (2 = RPCL).
RPCL = 2


def _progression_order(codestream: bytes) -> int:
    at = codestream.find(b"\xff\x52")
    assert at > 0, "no COD marker"
    return codestream[at + 5]


@pytest.mark.parametrize(
    ("storage_format", "syntax", "content_type"),
    [
        ("HTJ2K", "1.2.840.10008.1.2.4.202", "image/jph"),
        ("JPEG_2000_LOSSLESS", "1.2.840.10008.1.2.4.90", "image/j2c"),
    ],
)
def test_lossless_storage_format(
    ahi: Any, moto_s3: str, fidelity_ahi: Any, tmp_path: Path, storage_format: str, syntax: str,
    content_type: str,
) -> None:  # fmt: skip
    series = write_series(tmp_path / "src", SeriesSpec(slices=3, rows=32, columns=24))
    ds = ahi.create_datastore(
        datastoreName=f"format-{storage_format}",
        clientToken=storage_format,
        losslessStorageFormat=storage_format,
    )["datastoreId"]
    wait_datastore_active(ahi, ds)
    props = ahi.get_datastore(datastoreId=ds)["datastoreProperties"]
    assert props["losslessStorageFormat"] == storage_format
    [image_set] = import_folder(ahi, s3_client(moto_s3), ds, tmp_path / "src").image_set_ids
    doc = read_metadata(ahi, ds, image_set)
    instances = doc["Study"]["Series"][series.series_uid]["Instances"]
    assert {i["StoredTransferSyntaxUID"] for i in instances.values()} == {syntax}
    frame_id = instances[series.sop_instance_uids[0]]["ImageFrames"][0]["ID"]
    frame = ahi.get_image_frame(
        datastoreId=ds, imageSetId=image_set, imageFrameInformation={"imageFrameId": frame_id}
    )
    assert frame["contentType"] == content_type
    data = frame["imageFrameBlob"].read()
    if storage_format == "HTJ2K":
        assert _progression_order(data) == RPCL
    else:
        assert data[:4] == b"\xff\x4f\xff\x51"  # SOC + SIZ: a raw JPEG 2000 codestream
    client = make_ahi_client(fidelity_ahi.url, session=dummy_session())
    with ImageSetExporter(client, max_workers=2, deadline_s=120) as exporter:
        datasets = exporter.to_datasets(ds, image_set)
    assert [d.SOPInstanceUID for d in datasets] == series.sop_instance_uids
    for out, source in zip(datasets, series.pixels, strict=True):
        np.testing.assert_array_equal(out.pixel_array, source)

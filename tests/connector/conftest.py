"""Connector fixtures: one import of many synthetic series into the session's ahi-local, and an exporter."""

from __future__ import annotations

import dataclasses
import gzip
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pydicom
import pytest
from pydicom.uid import (
    JPEG2000,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    generate_uid,
)

from ahi_connector import ImageSetExporter, make_ahi_client
from devstack.clients import ahi_client, s3_client
from devstack.importing import create_datastore, import_folder
from devstack.synthetic import SeriesSpec, SyntheticSeries, write_series

STUDY_UID = generate_uid()
CASES: dict[str, SeriesSpec] = {
    "ct_int16_12bit": SeriesSpec(slices=6, rescale_intercept=-1024.0, rescale_slope=1.0),
    "uint16_16bit_implicit": SeriesSpec(
        slices=3, bits_stored=16, signed=False, transfer_syntax=ImplicitVRLittleEndian
    ),
    "uint8_mono1": SeriesSpec(
        slices=2, bits_allocated=8, bits_stored=8, signed=False, photometric="MONOCHROME1"
    ),
    "int8": SeriesSpec(slices=2, bits_allocated=8, bits_stored=8, signed=True),
    "multiframe_signed": SeriesSpec(slices=5, multiframe=True, rescale_slope=2.0, rescale_intercept=-1000.0),
    "multiframe_2": SeriesSpec(slices=2, multiframe=True),
    "rgb_native": SeriesSpec(slices=2, bits_allocated=8, bits_stored=8, signed=False, photometric="RGB"),
    "rgb_jpeg_baseline": SeriesSpec(
        slices=2,
        bits_allocated=8,
        bits_stored=8,
        signed=False,
        photometric="RGB",
        transfer_syntax=JPEGBaseline8Bit,
    ),
    "j2k_lossy_signed": SeriesSpec(slices=2, transfer_syntax=JPEG2000),
    "j2k_lossless_u16": SeriesSpec(slices=2, signed=False, transfer_syntax=JPEG2000Lossless),
    "jpeg_lossless_12bit": SeriesSpec(slices=2, signed=False, transfer_syntax=JPEGLosslessSV1),
}


@dataclasses.dataclass(frozen=True)
class ImportedCase:
    name: str
    written: SyntheticSeries
    datastore_id: str
    image_set_id: str


def dummy_session() -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )


def set_faults(url: str, **settings: object) -> dict:
    req = urllib.request.Request(
        f"{url}/_local/faults",
        data=json.dumps(settings).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def import_cases(
    url: str, s3_url: str, folder: Path, cases: dict[str, SeriesSpec]
) -> dict[str, ImportedCase]:
    ahi = ahi_client(url)
    written = {}
    for number, (name, spec) in enumerate(cases.items(), start=1):
        spec = dataclasses.replace(
            spec, study_uid=STUDY_UID, series_number=number, seed=number, series_description=name
        )
        written[name] = write_series(folder, spec)
    datastore_id = create_datastore(ahi, "connector-tests")
    result = import_folder(ahi, s3_client(s3_url), datastore_id, folder)
    assert result.job_status == "COMPLETED" and not result.failure, result.failure
    by_series = {}
    for image_set_id in result.image_set_ids:
        doc = ahi.get_image_set_metadata(datastoreId=datastore_id, imageSetId=image_set_id)
        meta = json.loads(gzip.decompress(doc["imageSetMetadataBlob"].read()))
        for series_uid in meta["Study"]["Series"]:
            by_series[series_uid] = image_set_id
    return {name: ImportedCase(name, w, datastore_id, by_series[w.series_uid]) for name, w in written.items()}


@pytest.fixture(scope="session")
def imported(
    ahi_local: str, moto_s3: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, ImportedCase]:
    return import_cases(ahi_local, moto_s3, tmp_path_factory.mktemp("connector-dicom"), CASES)


@pytest.fixture(scope="session")
def exporter(ahi_local: str) -> Iterator[ImageSetExporter]:
    with ImageSetExporter(
        make_ahi_client(ahi_local, session=dummy_session()), max_workers=8, deadline_s=120
    ) as ex:
        yield ex


def read_original(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)

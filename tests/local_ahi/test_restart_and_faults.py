"""Durability across restarts and fault injection (flags, environment, runtime /_local/faults)."""

from __future__ import annotations

import gzip
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Any

import boto3
import imagecodecs
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError

from devstack.clients import ahi_client, s3_client
from devstack.importing import create_datastore, import_folder
from devstack.processes import ahi_local_server
from devstack.synthetic import SeriesSpec, write_series
from tests.support.ahi_metadata import read_metadata


def _frame_ids(doc: dict[str, Any]) -> list[str]:
    return [
        f["ID"]
        for s in doc["Study"]["Series"].values()
        for i in s["Instances"].values()
        for f in i["ImageFrames"]
    ]


def _frame(ahi: Any, ds: str, image_set: str, frame_id: str) -> bytes:
    return ahi.get_image_frame(
        datastoreId=ds, imageSetId=image_set, imageFrameInformation={"imageFrameId": frame_id}
    )["imageFrameBlob"].read()


def test_restart_keeps_datastores_image_sets_and_frames(moto_s3: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_series(tmp_path / "src", SeriesSpec(slices=3, rows=16, columns=16))
    with ahi_local_server(data_dir, s3_endpoint_url=moto_s3) as url:
        ahi = ahi_client(url, max_attempts=1)
        ds = create_datastore(ahi, "durable")
        result = import_folder(ahi, s3_client(moto_s3), ds, tmp_path / "src")
        image_set = result.image_set_ids[0]
        ahi.tag_resource(
            resourceArn=ahi.get_image_set(datastoreId=ds, imageSetId=image_set)["imageSetArn"],
            tags={"kept": "yes"},
        )
        raw_before = ahi.get_image_set_metadata(datastoreId=ds, imageSetId=image_set)[
            "imageSetMetadataBlob"
        ].read()
        doc = read_metadata(ahi, ds, image_set)
        frames_before = {fid: _frame(ahi, ds, image_set, fid) for fid in _frame_ids(doc)}
        props_before = ahi.get_image_set(datastoreId=ds, imageSetId=image_set)
    with ahi_local_server(data_dir, s3_endpoint_url=moto_s3) as url:
        ahi = ahi_client(url, max_attempts=1)
        assert ahi.get_datastore(datastoreId=ds)["datastoreProperties"]["datastoreName"] == "durable"
        raw_after = ahi.get_image_set_metadata(datastoreId=ds, imageSetId=image_set)[
            "imageSetMetadataBlob"
        ].read()
        assert gzip.decompress(raw_after) == gzip.decompress(raw_before)
        assert {fid: _frame(ahi, ds, image_set, fid) for fid in frames_before} == frames_before
        props_after = ahi.get_image_set(datastoreId=ds, imageSetId=image_set)
        assert props_after["versionId"] == props_before["versionId"] and props_after["isPrimary"]
        assert ahi.list_tags_for_resource(resourceArn=props_after["imageSetArn"])["tags"] == {"kept": "yes"}
        job = ahi.get_dicom_import_job(datastoreId=ds, jobId=result.job_id)["jobProperties"]
        assert job["jobStatus"] == "COMPLETED"
        summaries = ahi.search_image_sets(datastoreId=ds)["imageSetsMetadataSummaries"]
        assert [s["imageSetId"] for s in summaries] == [image_set]


@pytest.fixture(scope="module")
def faulty(moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server started with rate faults limited to two operations (one by flag, one by environment)."""
    data_dir = tmp_path_factory.mktemp("faulty")
    src = tmp_path_factory.mktemp("faulty-src")
    series = write_series(src, SeriesSpec(slices=4, rows=32, columns=32))
    args = [
        "--throttle-rate",
        "1.0",
        "--fault-operation",
        "ListDatastores",
        "--fault-operation",
        "GetDatastore",
        "--datastore-creation-seconds",  # CREATING is answered, ACTIVE at the next call: no GetDatastore
        "0",
    ]
    with ahi_local_server(
        data_dir, s3_endpoint_url=moto_s3, extra_args=args, env={"AHI_LOCAL_ERROR_RATE": "0"}
    ) as url:
        ahi = ahi_client(url, max_attempts=1)
        ds = create_datastore_without_get(ahi)
        result = import_folder(ahi, s3_client(moto_s3), ds, src)
        yield {
            "url": url,
            "ahi": ahi,
            "ds": ds,
            "image_set": result.image_set_ids[0],
            "series": series,
            "data_dir": data_dir,
        }


def create_datastore_without_get(ahi: Any) -> str:
    """GetDatastore is throttled on this server, so do not wait for ACTIVE (with --transition-seconds 0 it is
    ACTIVE by the next call)."""
    return ahi.create_datastore(datastoreName="faulty", clientToken=uuid.uuid4().hex)["datastoreId"]


def _set_faults(url: str, **values: Any) -> dict[str, Any]:
    resp = requests.put(f"{url}/_local/faults", json=values, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_throttling_from_flags_hits_only_named_operations(faulty: dict[str, Any]) -> None:
    ahi = faulty["ahi"]
    with pytest.raises(ahi.exceptions.ThrottlingException, match="Rate exceeded for ListDatastores"):
        ahi.list_datastores()
    with pytest.raises(ahi.exceptions.ThrottlingException, match="Rate exceeded for GetDatastore"):
        ahi.get_datastore(datastoreId=faulty["ds"])
    assert ahi.get_image_set(datastoreId=faulty["ds"], imageSetId=faulty["image_set"])["versionId"] == "1"


def test_frame_faults_at_runtime(faulty: dict[str, Any]) -> None:
    url, ahi, ds, image_set = faulty["url"], faulty["ahi"], faulty["ds"], faulty["image_set"]
    doc = read_metadata(ahi, ds, image_set)
    ids = _frame_ids(doc)
    checksums = {
        f["ID"]: f["PixelDataChecksumFromBaseToFullResolution"][0]["Checksum"]
        for s in doc["Study"]["Series"].values()
        for i in s["Instances"].values()
        for f in i["ImageFrames"]
    }
    good = {fid: _frame(ahi, ds, image_set, fid) for fid in ids}
    settings = _set_faults(
        url, fail_frames=[ids[0]], corrupt_frames=[ids[1]], hang_frames=[ids[2]], hang_seconds=3
    )
    assert settings["fail_frames"] == [ids[0]] and settings["throttle_rate"] == 1.0
    with pytest.raises(ahi.exceptions.InternalServerException, match=f"image frame {ids[0]} failed"):
        _frame(ahi, ds, image_set, ids[0])
    corrupted = _frame(ahi, ds, image_set, ids[1])
    assert corrupted != good[ids[1]] and corrupted[:16] == good[ids[1]][:16]
    with pytest.raises(imagecodecs.Htj2kError, match="OpenJPH error"):
        imagecodecs.htj2k_decode(corrupted)
    assert zlib.crc32(imagecodecs.htj2k_decode(good[ids[1]]).tobytes()) == checksums[ids[1]]
    quick = boto3.client(
        "medical-imaging",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(inject_host_prefix=False, read_timeout=1, retries={"max_attempts": 1}),
    )
    with pytest.raises(ReadTimeoutError, match="Read timeout"):
        _frame(quick, ds, image_set, ids[2])
    assert _frame(ahi, ds, image_set, ids[3]) == good[ids[3]]
    _set_faults(url, fail_frames=[], corrupt_frames=[], hang_frames=[])
    assert {fid: _frame(ahi, ds, image_set, fid) for fid in ids} == good


def test_bad_fault_settings_are_rejected(faulty: dict[str, Any]) -> None:
    resp = requests.put(f"{faulty['url']}/_local/faults", json={"throttle_rate": 2}, timeout=10)
    assert resp.status_code == 400 and "between 0 and 1" in resp.json()["message"]
    resp = requests.put(f"{faulty['url']}/_local/faults", json={"nonsense": 1}, timeout=10)
    assert resp.status_code == 400 and "unknown fault settings ['nonsense']" in resp.json()["message"]


def test_fail_frame_flag_and_env_after_restart(faulty: dict[str, Any], moto_s3: str) -> None:
    ahi, ds, image_set = faulty["ahi"], faulty["ds"], faulty["image_set"]
    ids = _frame_ids(read_metadata(ahi, ds, image_set))
    env = {
        "AHI_LOCAL_CORRUPT_FRAMES": ids[1],
        "AHI_LOCAL_ERROR_RATE": "1",
        "AHI_LOCAL_FAULT_OPERATIONS": "GetImageSet",
    }
    # a second server on a copy of the store: the first keeps running for the other tests
    copy = Path(str(faulty["data_dir"]) + "-copy")
    shutil.copytree(faulty["data_dir"], copy)
    with ahi_local_server(copy, s3_endpoint_url=moto_s3, extra_args=["--fail-frame", ids[0]], env=env) as url:
        other = ahi_client(url, max_attempts=1)
        with pytest.raises(other.exceptions.InternalServerException, match="fault injection: fail_frames"):
            _frame(other, ds, image_set, ids[0])
        assert _frame(other, ds, image_set, ids[1]) != _frame(ahi, ds, image_set, ids[1])
        with pytest.raises(other.exceptions.InternalServerException, match="fault injection: error_rate"):
            other.get_image_set(datastoreId=ds, imageSetId=image_set)


def test_second_server_on_the_same_store_is_refused(tmp_path: Path) -> None:
    with ahi_local_server(tmp_path / "data"):
        with pytest.raises(RuntimeError, match="in use by another ahi-local process"):
            with ahi_local_server(tmp_path / "data", env={"AHI_LOCAL_LOCK_WAIT_S": "1"}):
                pass

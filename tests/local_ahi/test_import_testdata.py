"""Import every DICOM file shipped with pydicom and pydicom-data through a real ahi-local + moto S3, then
read each back through boto3 and compare it with the original: every top-level attribute and every frame,
pixel-exact. Files pydicom itself cannot read or decode must land in failure.ndjson instead."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_files

from devstack.clients import ahi_client, s3_client
from devstack.importing import create_datastore
from tests.local_ahi.roundtrip import (
    Expectation,
    ImportedFile,
    MetadataCache,
    assert_round_trip,
    expect,
    import_files,
    rounds_without_duplicate_sops,
)

logger = logging.getLogger(__name__)

FILES = sorted({Path(p) for p in get_testdata_files() if Path(p).is_file()})


@pytest.fixture(scope="module")
def expectations() -> dict[Path, Expectation]:
    """pydicom's verdict on every file (computed once, not at collection time)."""
    return {p: expect(p) for p in FILES}


@pytest.fixture(scope="module")
def imported(
    ahi_local: str,
    moto_s3: str,
    tmp_path_factory: pytest.TempPathFactory,
    expectations: dict[Path, Expectation],
) -> dict[str, Any]:
    ahi, s3 = ahi_client(ahi_local), s3_client(moto_s3)
    by_path: dict[Path, ImportedFile] = {}
    results = []
    for number, batch in enumerate(rounds_without_duplicate_sops(list(expectations.values()))):
        datastore_id = create_datastore(ahi, f"testdata-round-{number}")
        folder = tmp_path_factory.mktemp(f"testdata-round-{number}")
        result, files = import_files(ahi, s3, datastore_id, [e.path for e in batch], folder)
        results.append(result)
        by_path.update(files)
    return {"ahi": ahi, "files": by_path, "results": results, "cache": MetadataCache(ahi)}


def test_every_file_is_in_exactly_one_list(imported: dict[str, Any]) -> None:
    for result in imported["results"]:
        assert result.job_status == "COMPLETED", result.job_properties
        names = [line["inputFile"] for line in result.success + result.failure]
        assert len(names) == len(set(names)) == result.manifest["jobSummary"]["numberOfScannedFiles"]
    assert set(imported["files"]) == set(FILES)


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_file_round_trip(imported: dict[str, Any], expectations: dict[Path, Expectation], path: Path) -> None:
    exp = expectations[path]
    result: ImportedFile = imported["files"][path]
    if not exp.importable:
        assert result.failure is not None, (
            f"{path.name} ({exp.reason}) was imported into {result.image_set_id}"
        )
        assert result.failure["exception"]["message"], result.failure
        return
    assert_round_trip(imported["ahi"], imported["cache"], result, path)

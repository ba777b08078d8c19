"""Conformance corpus: every DICOM file of pydicom and pydicom-data plus the generated edge cases, imported
once into one ahi-local (with its own datastores, not the session's), checked twice:

- at import, through boto3 alone: each file is in exactly one of the job's success and failure lists, and an
  imported file reads back with every top-level attribute and every frame pixel-exact;
- at export, by the connector: every image set comes back exactly (see :mod:`tests.conformance.corpus`).

A file may be rejected at import only for a reason a DICOM expert accepts, judged independently with pydicom
(:func:`tests.local_ahi.roundtrip.expect`): not a DICOM Part 10 file, no SOP / Study / Series Instance UID,
or pixel data pydicom itself cannot decode (truncated or corrupt). Everything else must export exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.clients import ahi_client, s3_client
from devstack.processes import ahi_local_server
from tests.conformance.corpus import Outcome, check_corpus, corpus_files, table
from tests.conformance.edge_cases import write_cases
from tests.local_ahi.roundtrip import (
    ImportedCorpus,
    ImportedFile,
    MetadataCache,
    assert_round_trip,
    import_corpus,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the corpus's invalid values

FILES = corpus_files()


@pytest.fixture(scope="module")
def store(moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ImportedCorpus]]:
    """The corpus imported into its own ahi-local; yields its client and the import."""
    work = tmp_path_factory.mktemp("corpus")
    files = FILES + write_cases(work / "edge-cases")
    with ahi_local_server(work / "ahi-local-data", s3_endpoint_url=moto_s3) as url:
        ahi = ahi_client(url)
        yield ahi, import_corpus(ahi, s3_client(moto_s3), files, work / "stage")


@pytest.fixture(scope="module")
def outcomes(store: tuple[Any, ImportedCorpus]) -> list[Outcome]:
    """Every image set of the corpus, exported and checked."""
    return check_corpus(*store)


@pytest.fixture(scope="module")
def metadata(store: tuple[Any, ImportedCorpus]) -> MetadataCache:
    return MetadataCache(store[0])


def test_every_file_is_in_exactly_one_list(store: tuple[Any, ImportedCorpus]) -> None:
    _, corpus = store
    for result in corpus.results:
        assert result.job_status == "COMPLETED", result.job_properties
        names = [line["inputFile"] for line in result.success + result.failure]
        assert len(names) == len(set(names)) == result.manifest["jobSummary"]["numberOfScannedFiles"]
    assert set(FILES) <= set(corpus.files)


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_file_round_trip(store: tuple[Any, ImportedCorpus], metadata: MetadataCache, path: Path) -> None:
    """Through the AHI API alone (boto3), before any connector code."""
    ahi, corpus = store
    exp = corpus.expectations[path]
    result: ImportedFile = corpus.files[path]
    if not exp.importable:
        imported_as = result.image_set_id
        assert result.failure is not None, f"{path.name} ({exp.reason}) was imported into {imported_as}"
        assert result.failure["exception"]["message"], result.failure
        return
    assert_round_trip(ahi, metadata, result, path)


def test_corpus_table(outcomes: list[Outcome], capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print("\nconformance corpus (pydicom + pydicom-data + generated edge cases)\n" + table(outcomes))
    assert len({o.path for o in outcomes}) == len(outcomes)


def test_no_silent_difference(outcomes: list[Outcome]) -> None:
    bad = [
        f"{o.path.name}: {o.status}: {o.detail}" for o in outcomes if o.status in ("differs", "export-error")
    ]
    assert not bad, f"{len(bad)} instance(s) do not export exactly:\n" + "\n".join(bad)


def test_rejections_only_with_an_accepted_reason(outcomes: list[Outcome]) -> None:
    bad = [f"{o.path.name}: {o.detail}" for o in outcomes if o.status == "rejected"]
    assert not bad, "imported files pydicom reads and decodes were rejected:\n" + "\n".join(bad)


def test_every_edge_case_is_imported(outcomes: list[Outcome]) -> None:
    """The generated cases are all valid DICOM: none may be rejected."""
    edge = [o for o in outcomes if o.path.parent.name == "edge-cases"]
    assert len(edge) >= 50
    assert [o.path.name for o in edge if o.status != "exact"] == []

"""Conformance corpus: every DICOM file of pydicom and pydicom-data plus the generated edge cases, imported
into one ahi-local and exported by the connector, must come back exactly (see
:mod:`tests.conformance.corpus`).

A file may be rejected at import only for a reason a DICOM expert accepts, judged independently with pydicom
(:func:`tests.local_ahi.roundtrip.expect`): not a DICOM Part 10 file, no SOP / Study / Series Instance UID,
or pixel data pydicom itself cannot decode (truncated or corrupt). Everything else must export exactly.
"""

from __future__ import annotations

import pytest

from devstack.clients import ahi_client, s3_client
from devstack.processes import ahi_local_server
from tests.conformance.corpus import Outcome, corpus_files, run_corpus, table
from tests.conformance.edge_cases import write_cases

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the corpus's invalid values


@pytest.fixture(scope="module")
def outcomes(moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    """The whole corpus through its own ahi-local (its datastores do not count against the session's)."""
    work = tmp_path_factory.mktemp("conformance")
    files = corpus_files() + write_cases(work / "edge-cases")
    with ahi_local_server(work / "ahi-local-data", s3_endpoint_url=moto_s3) as url:
        return run_corpus(ahi_client(url), s3_client(moto_s3), files, work)


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

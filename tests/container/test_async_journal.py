"""The gateway's async journal: what is accepted stays on disk until its result object is written."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ahi_connector.s3uri import S3Uri
from devstack.sagemaker_local.app import AsyncJob, AsyncJournal


def _job(inference_id: str) -> AsyncJob:
    return AsyncJob(
        inference_id=inference_id,
        input_loc=S3Uri("in-bucket", "requests/a.json"),
        out=S3Uri("out-bucket", f"async/{inference_id}.out"),
        fail=S3Uri("out-bucket", f"async/{inference_id}-error.out"),
        headers={"Content-Type": "application/json"},
    )


def test_accepted_jobs_survive_a_new_journal_instance(tmp_path: Path) -> None:
    first = AsyncJournal(tmp_path / "q")
    first.add(_job("job-1"))
    first.add(_job("job-2"))
    again = AsyncJournal(tmp_path / "q")  # a restarted gateway
    pending = {j.inference_id: j for j in again.pending()}
    assert set(pending) == {"job-1", "job-2"}
    assert pending["job-1"].out.uri == "s3://out-bucket/async/job-1.out"
    assert pending["job-1"].input_loc.uri == "s3://in-bucket/requests/a.json"
    again.done("job-1")
    assert [j.inference_id for j in AsyncJournal(tmp_path / "q").pending()] == ["job-2"]


def test_unreadable_entry_is_kept_and_reported(tmp_path: Path, caplog) -> None:
    journal = AsyncJournal(tmp_path / "q")
    journal.add(_job("good"))
    bad = tmp_path / "q" / "broken.json"
    bad.write_text(json.dumps({"InferenceId": "broken", "InputLocation": "not-an-s3-uri"}))
    with caplog.at_level(logging.ERROR):
        ids = [j.inference_id for j in journal.pending()]
    assert ids == ["good"]
    assert bad.exists()
    assert "broken.json is unreadable" in caplog.text


def test_inference_ids_cannot_escape_the_journal_dir(tmp_path: Path) -> None:
    journal = AsyncJournal(tmp_path / "q")
    journal.add(_job("../../etc/evil"))
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [".._.._etc_evil.json"]
    assert [j.inference_id for j in journal.pending()] == ["../../etc/evil"]

"""What ``ahi-spleen`` shows on stderr while it works: progress with elapsed time and AWS state, one summary
line, ``--json`` events for scripts and ``--quiet``; stdout keeps the result JSON in every mode."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scripts.aws import cli
from scripts.aws.session import Progress, wait_for
from tests.aws.conftest import BUCKET, REGION

NAME = "prg"


@pytest.fixture
def uploaded(aws_env: str, small_archive: Path) -> None:
    code, _ = cli.run(_argv(aws_env, "upload-model", "--archive", str(small_archive), "--quiet"))
    assert code == 0


def _argv(url: str, command: str, *extra: str) -> list[str]:
    return [command, "--name", NAME, "--bucket", BUCKET, *extra, "--endpoint-url", url, "--region", REGION]


def _deploy(url: str, *mode: str) -> list[str]:
    return _argv(url, "deploy-realtime", "--image", "img:latest", "--create-roles", *mode)


def test_deploy_shows_state_lines_and_ends_with_one_summary_line(aws_env, uploaded, capsys) -> None:
    code, text = cli.run(_deploy(aws_env))
    err = capsys.readouterr().err.splitlines()
    result = json.loads(text)["result"]
    # not a terminal here: one line per state change, elapsed seconds first
    assert any(
        re.fullmatch(rf"\[\s*\d+ s\] endpoint {NAME}-rt: InService", line) for line in err
    ), err
    summary = [line for line in err if line.startswith("ahi-spleen deploy-realtime:")]
    assert summary == [err[-1]]
    assert f"endpoint {result['endpoint_name']} InService" in summary[0]
    assert f"dashboard {NAME}-rt + 4 alarms" in summary[0]
    assert re.search(rf"; {len(json.loads(text)['changes'])} change\(s\); \d+ s$", summary[0])


def test_json_mode_writes_progress_and_summary_events_and_the_same_stdout(aws_env, uploaded, capsys) -> None:
    code, text = cli.run(_deploy(aws_env, "--json"))
    err = capsys.readouterr().err.splitlines()
    events = [json.loads(line) for line in err if line.startswith('{"event"')]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["status"] == "InService" and progress[-1]["elapsedSeconds"] >= 0
    assert events[-1]["event"] == "summary" and events[-1]["exitCode"] == code == 0
    assert events[-1]["changes"] == len(json.loads(text)["changes"])
    assert json.loads(text)["result"]["status"] == "InService"


def test_quiet_mode_shows_neither_progress_nor_summary(aws_env, uploaded, capsys) -> None:
    code, text = cli.run(_deploy(aws_env, "--quiet"))
    err = capsys.readouterr().err
    assert code == 0 and json.loads(text)["result"]["status"] == "InService"
    assert "InService" not in err and "ahi-spleen deploy-realtime:" not in err


def test_progress_lines_only_on_state_changes(capsys) -> None:
    states = iter(["Creating", "Creating", "Creating", "Updating", "InService"])
    assert wait_for(
        lambda: next(states), what="thing", done={"InService"}, interval_s=0.01, progress="lines"
    ) == ("InService")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "thing: Creating",
        "thing: Updating",
        "thing: InService",
    ]
    with Progress("quiet thing", "off") as shown:
        shown.update("Creating")
    assert capsys.readouterr().err == ""

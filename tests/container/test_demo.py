"""``make demo`` (scripts/demo.py) end to end, and its clean-up on Ctrl-C."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(text in arg for arg in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _work_dir(output: str) -> Path:
    match = re.search(r"logs and data: (\S+)", output)
    assert match, output
    return Path(match[1])


def test_demo_runs_end_to_end_and_stops_everything(model_store: Path, tmp_path: Path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.demo",
            "--model-archive",
            str(model_store / "model.tar.gz"),
            "--keep-logs",
            "--preview-out",
            str(tmp_path / "preview.png"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert 'invoke_endpoint(EndpointName="spleen-mme", TargetModel="model.tar.gz")' in out
    assert re.search(r"SEG \(DICOM\)\s+: s3://spleen-demo-results/results/\S+/seg\.dcm", out)
    assert "SEG check        : SOP class Segmentation Storage" in out
    assert re.search(r"written to AHI   : STOW-RS \(HTTP 200\) -> image set [0-9a-z]{32} in \w{32}", out)
    assert re.search(r"QIDO-RS check    : SEG series \S+ found in study \S+", out)
    preview = re.search(r"preview \(PNG\)    : s3://\S+/preview\.png -> saved to (\S+)", out)
    assert preview and Path(preview[1]) == tmp_path / "preview.png", out
    assert (tmp_path / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.rstrip().endswith("done.")
    work = _work_dir(out)
    try:
        assert _processes_mentioning(str(work)) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_demo_interrupted_stops_what_it_started(model_store: Path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.demo", "--model-archive", str(model_store / "model.tar.gz")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("==> generating phantom"):
            break
    work = _work_dir("".join(lines))
    assert _processes_mentioning(str(work)), "the services should be running now"
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    try:
        assert proc.returncode == 130, rest
        assert "interrupted; everything the demo started has been stopped" in rest
        assert _processes_mentioning(str(work)) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)

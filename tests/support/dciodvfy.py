"""``dciodvfy`` (dicom3tools, Debian package ``dicom3tools``, installed by scripts/install.sh): the IOD
validator every SEG the product writes must pass without errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

#: Warnings dciodvfy may give on a product SEG, each with the reason it is acceptable (README lists them).
ACCEPTED_WARNINGS: dict[str, str] = {
    "(0x0018,0x1002) UI Device UID": (
        "Device UID of the model in the Contributing Equipment Sequence (0018,A001), which the IHE AI "
        "Results profile asks for; dicom3tools 2022 does not list it in that sequence (an extension)"
    ),
    "this is a Standard Extended SOP Class": (
        "the summary of the warning above: a Standard Extended SOP Class (PS3.4 B.1.3) is conformant"
    ),
}


def require_dciodvfy() -> str:
    """Path of dciodvfy, or skip the test with the reason and the fix."""
    path = shutil.which("dciodvfy")
    if path is None:
        pytest.skip("dciodvfy is not installed: run scripts/install.sh as root (apt-get install dicom3tools)")
    return path


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) dciodvfy reports for the file at ``path`` (it exits 0 either way)."""
    proc = subprocess.run(
        [require_dciodvfy(), str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    if proc.returncode not in (0, 1) and not errors:
        errors.append(f"dciodvfy exited {proc.returncode}: {proc.stderr[-500:]}")
    return errors, warnings


def assert_conformant(path: Path) -> list[str]:
    """No dciodvfy error and no warning outside :data:`ACCEPTED_WARNINGS`; returns the warnings."""
    errors, warnings = dciodvfy(path)
    assert not errors, f"dciodvfy errors for {path.name}:\n" + "\n".join(errors + warnings)
    unexpected = [w for w in warnings if not any(key in w for key in ACCEPTED_WARNINGS)]
    assert not unexpected, f"dciodvfy warnings for {path.name} not in ACCEPTED_WARNINGS:\n" + "\n".join(
        unexpected
    )
    return warnings

"""The layout rules of CONTRIBUTING.md, read from the code: who may import whom, and what the wheel ships."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("ahi_connector", "app", "container", "model", "scripts/aws", "trigger")
#: (package, packages it must not import, the reason)
RULES = (
    *((p, {"devstack", "tests"}, "the local doubles and tests never ship with the product") for p in PRODUCT),
    ("ahi_connector", {"app", "container", "model", "scripts"}, "the connector is usable on its own"),
    ("app", {"container", "scripts"}, "the MAP runs without the SageMaker container"),
    ("model", {"container", "scripts"}, "training never depends on serving"),
    ("scripts", {"tests"}, "demo and benchmarks use devstack, never test helpers"),
    ("trigger", {"app", "container", "model", "scripts"}, "the Lambda zip: trigger/ + light connector"),
    ("devstack", {"tests"}, "tests use devstack, not the other way round"),
)


def _module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported_top_levels(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (relative imports resolved, lazy imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.add((base or [""])[0])
            elif node.module:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden", "reason"), RULES, ids=[f"{r[0]}-{i}" for i, r in enumerate(RULES)]
)
def test_import_rule(package: str, forbidden: set[str], reason: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_top_levels(path) & forbidden
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, f"{package} must not import {sorted(forbidden)} ({reason}):\n" + "\n".join(
        offenders
    )


def test_relative_imports_are_resolved() -> None:
    # devstack/ahi_local/server.py uses "from .store import ..." inside devstack
    assert "devstack" in imported_top_levels(ROOT / "devstack" / "ahi_local" / "server.py")


def test_wheel_ships_no_emulator_or_test_code(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ahi_spleen_seg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("ahi_connector/") for n in names)
    assert any(n.startswith("container/prebuilt/") for n in names)
    leaked = [n for n in names if n.split("/")[0] in ("devstack", "tests")]
    assert not leaked, f"the wheel ships local doubles / tests: {leaked[:10]}"


def test_image_build_context_excludes_the_local_doubles() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {"devstack", "tests"} <= ignored

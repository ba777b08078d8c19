"""Build ``model.tar.gz``: the artefact a SageMaker multi-model endpoint loads as ``TargetModel``.

Layout (see CONTRIBUTING.md)::

    spleen_ct_segmentation/configs/metadata.json
    spleen_ct_segmentation/configs/inference.json
    spleen_ct_segmentation/models/model.ts
    code/...            (from container/prebuilt/: entry of SageMaker's prebuilt PyTorch container)

The archive is reproducible: entries sorted, mtime/uid/gid/owner names fixed, gzip header without name or
time, so two builds from the same inputs are byte-identical.

CLI: ``python -m model.package --output build/model.tar.gz [--bundle DIR] [--code DIR|--no-code]``
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

from app.bundle import (
    BUNDLE_NAME,
    INFERENCE_REL,
    METADATA_REL,
    MODEL_REL,
    find_bundle_dir,
)
from model import SOURCE_BUNDLE_DIR

logger = logging.getLogger(__name__)

#: Fixed timestamp of every entry (2024-01-01T00:00:00Z) so builds are byte-identical.
FIXED_MTIME = 1704067200
DEFAULT_CODE_DIR = Path(__file__).resolve().parents[1] / "container" / "prebuilt"


@dataclass(frozen=True)
class ArchiveEntry:
    """One file of the archive: its name inside the archive and its source on disk."""

    arcname: str
    source: Path


def archive_entries(bundle_dir: Path, code_dir: Path | None) -> list[ArchiveEntry]:
    """Files that go into the archive, sorted by archive name."""
    bundle_dir = find_bundle_dir(bundle_dir, max_depth=0)
    entries = [
        ArchiveEntry(f"{BUNDLE_NAME}/{rel.as_posix()}", bundle_dir / rel)
        for rel in (METADATA_REL, INFERENCE_REL, MODEL_REL)
    ]
    if not (bundle_dir / INFERENCE_REL).is_file():
        raise FileNotFoundError(
            f"bundle {str(bundle_dir)!r} has no {INFERENCE_REL}; it is required by the app"
        )
    if code_dir is not None:
        if not code_dir.is_dir():
            raise FileNotFoundError(f"code directory {str(code_dir)!r} does not exist")
        for path in sorted(code_dir.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                entries.append(ArchiveEntry(f"code/{path.relative_to(code_dir).as_posix()}", path))
    return sorted(entries, key=lambda e: e.arcname)


def _dir_names(entries: list[ArchiveEntry]) -> list[str]:
    dirs: set[str] = set()
    for entry in entries:
        parts = entry.arcname.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(dirs)


def _tarinfo(name: str, size: int, is_dir: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if is_dir:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = size
        info.mode = 0o644
    return info


def build_archive(
    output: str | Path, bundle_dir: str | Path = SOURCE_BUNDLE_DIR, code_dir: str | Path | None = "auto"
) -> Path:
    """Write the reproducible ``model.tar.gz`` to ``output`` (atomically) and return its path.

    ``code_dir``: ``"auto"`` includes ``container/prebuilt/`` if it exists, None leaves ``code/`` out, a
    path must exist.
    """
    output = Path(output)
    if code_dir == "auto":
        code = DEFAULT_CODE_DIR if DEFAULT_CODE_DIR.is_dir() else None
    else:
        code = None if code_dir is None else Path(code_dir)
    entries = archive_entries(Path(bundle_dir), code)
    buf = io.BytesIO()
    items: list[tuple[str, Path | None]] = [(name, None) for name in _dir_names(entries)]
    items += [(e.arcname, e.source) for e in entries]
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, source in sorted(items):  # each directory right before its contents
            if source is None:
                tar.addfile(_tarinfo(name, 0, True))
            else:
                data = source.read_bytes()
                tar.addfile(_tarinfo(name, len(data), False), io.BytesIO(data))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
    ):
        gz.write(buf.getvalue())
    tmp.replace(output)
    logger.info("wrote %s (%d files, %.1f MB)", output, len(entries), output.stat().st_size / 1e6)
    return output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.package", description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", default="build/model.tar.gz", type=Path, help="archive to write")
    ap.add_argument("--bundle", default=SOURCE_BUNDLE_DIR, type=Path, help="bundle directory to package")
    group = ap.add_mutually_exclusive_group()
    group.add_argument(
        "--code", type=Path, default=None, help="code/ directory (default: container/prebuilt if present)"
    )
    group.add_argument("--no-code", action="store_true", help="leave code/ out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    code_dir: str | Path | None = None if args.no_code else (args.code or "auto")
    out = build_archive(args.output, args.bundle, code_dir)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

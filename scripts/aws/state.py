"""Local state file: what the CLI created that cannot carry our project tag (S3 objects, AHI data, buckets).

``cleanup`` deletes data only when it is listed here (or when told to with ``--force``). The file is JSON,
written atomically, one per deployment name and region: ``~/.ahi-spleen/<name>-<region>.json`` unless
``--state-file``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

KINDS = ("buckets", "s3_prefixes", "s3_objects", "datastores", "image_sets", "import_jobs")


def default_state_path(name: str, region: str) -> Path:
    root = Path(os.environ.get("AHI_SPLEEN_STATE_DIR", Path.home() / ".ahi-spleen"))
    return root / f"{name}-{region}.json"


class State:
    """Sets of created things, by kind; persisted on every change (never in dry-run mode)."""

    def __init__(self, path: Path, persist: bool = True) -> None:
        self.path = path
        self.persist = persist
        self._data: dict[str, list[Any]] = {kind: [] for kind in KINDS}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(
                    f"state file {str(path)!r} is unreadable ({exc}); fix or remove it "
                    "(it lists data the CLI created)"
                ) from exc
            for kind in KINDS:
                self._data[kind] = list(loaded.get(kind, []))

    def items(self, kind: str) -> list[Any]:
        return list(self._data[kind])

    def __contains__(self, key: tuple[str, Any]) -> bool:
        kind, value = key
        return value in self._data[kind]

    def add(self, kind: str, value: Any) -> None:
        if value not in self._data[kind]:
            self._data[kind].append(value)
            self._save()

    def discard(self, kind: str, value: Any) -> None:
        if value in self._data[kind]:
            self._data[kind].remove(value)
            self._save()

    def _save(self) -> None:
        if not self.persist:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self._data, indent=2, sort_keys=True))
        tmp.replace(self.path)
        logger.debug("state saved to %s", self.path)

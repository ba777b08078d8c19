"""Small helpers shared by the tests/aws modules."""

from __future__ import annotations


def tags_of(tags: list[dict[str, str]]) -> dict[str, str]:
    """``[{"Key":..,"Value":..}]`` (or lower-case keys) → ``{key: value}``."""
    return {t.get("Key", t.get("key", "")): t.get("Value", t.get("value", "")) for t in tags}

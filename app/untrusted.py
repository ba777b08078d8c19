"""Handling values that come from a client: bounded echoes in error messages and depth-bounded JSON.

Every server of the project (the container, ``app.request``, ahi-local, sagemaker-local) parses request bodies
and names offending values in its error messages. Two rules keep that safe whatever the client sends:

* :func:`brief` renders a value for a message in at most :data:`ECHO_LIMIT` characters (nested containers
  and long strings are abbreviated with ``…``), so a 6 MB padded ID never comes back whole and an error body
  stays small;
* :func:`loads` parses JSON like :func:`json.loads` but refuses documents nested deeper than
  :data:`MAX_JSON_DEPTH` levels with a :class:`ValueError` that says so (instead of a ``RecursionError``
  deep inside the parser, which servers would answer with a 500 and a traceback in their log).
"""

from __future__ import annotations

import json
import reprlib
from typing import Any

#: At most this many characters of a client's value are echoed in an error message.
ECHO_LIMIT = 200
#: JSON request bodies may nest objects/arrays at most this deep (ours need 4).
MAX_JSON_DEPTH = 32

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = ECHO_LIMIT
_repr.maxother = ECHO_LIMIT
_repr.maxlong = 60
for _name in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_repr, _name, 8)


class JSONDepthError(ValueError):
    """A JSON document nests deeper than :data:`MAX_JSON_DEPTH`."""


def brief(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` in at most ``limit`` characters (plus ``…``), cheap for any size or depth."""
    text = _repr.repr(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return text


def _depth_exceeds(raw: str | bytes | bytearray, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (a linear scan, no recursion)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def loads(raw: str | bytes | bytearray, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """:func:`json.loads`, refusing documents nested deeper than ``max_depth`` (:class:`JSONDepthError`)."""
    if _depth_exceeds(raw, max_depth):
        raise JSONDepthError(f"JSON nests arrays/objects deeper than {max_depth} levels")
    try:
        return json.loads(raw)
    except RecursionError as exc:  # not reachable after the scan; kept so no parser recursion escapes
        raise JSONDepthError(f"JSON nests arrays/objects deeper than {max_depth} levels") from exc

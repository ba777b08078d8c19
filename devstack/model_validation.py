"""Request validation derived from a botocore service model (ahi-local, sagemaker-local), as strict as AWS's
own front end.

AWS checks every request against the service's Smithy model before an operation runs: required members,
JSON types, string and blob lengths, list and map sizes, numeric ranges, enums, regular-expression patterns
and unions (exactly one member set). botocore's ``ParamValidator`` checks only part of that (no ``max``, no
``pattern``, no ``enum``), so this module walks the input shape recursively and checks all of it, for every
operation of whatever model is installed; nothing here names an operation or a member.

Failures are reported in AWS's words, all of them at once, e.g.
``2 validation errors detected: Value 'bad name!' at 'datastoreName' failed to satisfy constraint: Member must
satisfy regular expression pattern: [A-Za-z0-9._/#-]+; Value null at 'clientToken' failed to satisfy
constraint: Member must not be null``. The value of a member the model marks ``sensitive`` (a request body,
custom attributes, search criteria) is never echoed, only its absence: ``Value at 'Body' failed to satisfy
...``, but ``Value null at ...``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import re
from typing import Any

from botocore.model import Shape

logger = logging.getLogger(__name__)

# Java regular-expression classes that the AWS models use and Python's ``re`` lacks, as the body of a
# character class (wrapped in [...] when used outside one).
_JAVA_CLASSES = {
    "ASCII": r"\x00-\x7F",
    "Alnum": r"A-Za-z0-9",
    "Alpha": r"A-Za-z",
    "Digit": r"0-9",
    "Punct": r"!-/:-@\[-`{-~",
    "Print": r"\x20-\x7E",
    "Graph": r"\x21-\x7E",
    "Space": r" \t\n\x0B\f\r",
    "L": r"^\W\d_",
    "N": r"\d",
}


def _python_regex(pattern: str) -> str:
    """Translate the Java-only parts of a model pattern: ``\\p{Class}`` (in or outside ``[...]``), ``\\z``."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == "p" and pattern.startswith("{", i + 2) and "}" in pattern[i + 3 :]:
                name = pattern[i + 3 : pattern.index("}", i + 3)]
                body = _JAVA_CLASSES.get(name)
                if body is None:
                    raise re.error(f"unknown Java character class \\p{{{name}}}")
                if in_class and body.startswith("^"):
                    raise re.error(f"negated class \\p{{{name}}} inside [...]")
                out.append(body if in_class else f"[{body}]")
                i += 4 + len(name)
                continue
            out.append("\\Z" if nxt == "z" else pattern[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class and pattern[i - 1] != "[":
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


@functools.cache
def compiled_pattern(pattern: str) -> re.Pattern[str] | None:
    """The model's (Java-flavoured) pattern as a Python regex, or None when Python cannot express it (then
    the pattern is logged once and not enforced, rather than failing every request)."""
    try:
        return re.compile(_python_regex(pattern), re.DOTALL)
    except re.error as exc:
        logger.warning("model pattern %r is not enforced: Python cannot compile it (%s)", pattern, exc)
        return None


def _show(value: Any) -> str:
    if value is None:
        return "null"
    text = value if isinstance(value, str) else repr(value)
    if len(text) > 200:
        text = text[:200] + "..."
    return f"'{text}'"


class _Walker:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self._hidden = 0  # > 0 inside a member the model marks sensitive: its value is never echoed

    def fail(self, value: Any, path: str, constraint: str) -> None:
        shown = "" if self._hidden and value is not None else f" {_show(value)}"  # null tells nothing
        self.errors.append(f"Value{shown} at '{path}' failed to satisfy constraint: {constraint}")

    def walk(self, shape: Shape, value: Any, path: str) -> None:
        check = getattr(self, f"_{shape.type_name}", None)
        if check is None:
            return
        sensitive = bool(shape.metadata.get("sensitive"))
        self._hidden += sensitive
        try:
            check(shape, value, path)
        finally:
            self._hidden -= sensitive

    def _length(self, shape: Shape, value: Any, size: int, path: str) -> None:
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and size < low:
            self.fail(value, path, f"Member must have length greater than or equal to {low}")
        if high is not None and size > high:
            self.fail(value, path, f"Member must have length less than or equal to {high}")

    def _structure(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            self.fail(value, path, "Member must be a structure (JSON object)")
            return
        prefix = f"{path}." if path else ""
        present = [name for name in shape.members if value.get(name) is not None]
        for name in shape.required_members:
            if value.get(name) is None:
                self.fail(None, prefix + name, "Member must not be null")
        if shape.metadata.get("union") and len(present) != 1:
            self.fail(
                value,
                path or shape.name,
                f"Member must have exactly one of {sorted(shape.members)} set (found {sorted(present)})",
            )
        for name in present:
            self.walk(shape.members[name], value[name], prefix + name)

    def _list(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, list):
            self.fail(value, path, "Member must be a list")
            return
        self._length(shape, value, len(value), path)
        for index, item in enumerate(value):
            if item is None:
                self.fail(None, f"{path}.{index + 1}.member", "Member must not be null")
            else:
                self.walk(shape.member, item, f"{path}.{index + 1}.member")

    def _map(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            self.fail(value, path, "Member must be a map (JSON object)")
            return
        self._length(shape, value, len(value), path)
        for key, item in value.items():
            self.walk(shape.key, key, f"{path}.{key}.key")
            if item is None:
                self.fail(None, f"{path}.{key}.value", "Member must not be null")
            else:
                self.walk(shape.value, item, f"{path}.{key}.value")

    def _string(self, shape: Shape, value: Any, path: str) -> None:
        if not isinstance(value, str):
            self.fail(value, path, "Member must be a string")
            return
        self._length(shape, value, len(value), path)
        enum = shape.metadata.get("enum")
        if enum and value not in enum:
            self.fail(value, path, f"Member must satisfy enum value set: [{', '.join(enum)}]")
        pattern = shape.metadata.get("pattern")
        if pattern:
            regex = compiled_pattern(pattern)
            if regex is not None and not regex.fullmatch(value):
                self.fail(value, path, f"Member must satisfy regular expression pattern: {pattern}")

    def _range(self, shape: Shape, value: Any, path: str) -> None:
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and value < low:
            self.fail(value, path, f"Member must have value greater than or equal to {low}")
        if high is not None and value > high:
            self.fail(value, path, f"Member must have value less than or equal to {high}")

    def _integer(self, shape: Shape, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(value, path, "Member must be an integer")
            return
        self._range(shape, value, path)

    _long = _integer

    def _float(self, shape: Shape, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(value, path, "Member must be a number")
            return
        self._range(shape, value, path)

    _double = _float

    def _boolean(self, shape: Shape, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            self.fail(value, path, "Member must be a boolean")

    def _timestamp(self, shape: Shape, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.fail(value, path, "Member must be a timestamp (epoch seconds)")

    def _blob(self, shape: Shape, value: Any, path: str) -> None:
        if isinstance(value, (bytes, bytearray)):
            size = len(value)
        elif isinstance(value, str):
            try:
                size = len(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                self.fail(value, path, "Member must be base64-encoded binary data")
                return
        else:
            self.fail(value, path, "Member must be base64-encoded binary data")
            return
        self._length(shape, value, size, path)


def validation_errors(shape: Shape | None, params: dict[str, Any]) -> list[str]:
    """Every constraint of the model that ``params`` (the operation's input members) breaks, in AWS's
    words."""
    if shape is None:
        return []
    walker = _Walker()
    walker.walk(shape, params, "")
    return walker.errors


def validation_message(errors: list[str]) -> str:
    noun = "error" if len(errors) == 1 else "errors"
    return f"{len(errors)} validation {noun} detected: " + "; ".join(errors)

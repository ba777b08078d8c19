"""Every constraint of botocore's installed ``medical-imaging`` model is enforced by ahi-local, as AWS does.

The test walks every operation and every member reachable from its input shape (nested structures, lists,
maps, unions) and, for each ``pattern``, ``min``, ``max``, ``enum``, ``required`` and type constraint, sends
one request that breaks exactly that constraint. boto3 would refuse most of them itself, so the client runs
with ``parameter_validation=False`` and the request reaches the server as botocore serialises it. The server
must answer ValidationException naming the member's path and the constraint, in AWS's words. Nothing here
names an operation or a member: a newer model is walked the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.model import OperationModel, Shape

from devstack.model_validation import compiled_pattern

MAX_DEPTH = 6
#: Values tried, in order, for a string that must break its pattern but keep within its lengths.
PATTERN_BREAKERS = ("bad value with spaces!", "!", "é", "aws:x", " x", "-", "A" * 33)


@dataclasses.dataclass(frozen=True)
class Case:
    operation: str
    path: tuple[str | int | MapKey, ...]  # member names, list indexes, map keys from the input shape down
    value: Any  # the breaking value; MISSING means "leave the required member out"
    expect: str  # the text the ValidationException must contain

    @property
    def id(self) -> str:
        shown = ".".join(str(p) for p in self.path)
        return f"{self.operation}:{shown}:{self.expect.split(': ')[-1][:40]}"


MISSING = object()


@dataclasses.dataclass(frozen=True)
class MapKey:
    """A step into a map's value (AWS writes it ``<key>.value``)."""

    key: str


def _wire_path(path: tuple[Any, ...]) -> str:
    """The member path as AWS writes it in a validation message (``filters.1.member.values``)."""
    parts: list[str] = []
    for step in path:
        if isinstance(step, int):
            parts.append(f"{step + 1}.member")
        elif isinstance(step, MapKey):
            parts.append(f"{step.key}.value")
        else:
            parts.append(step)
    return ".".join(parts)


def _pattern_breaker(shape: Shape) -> str | None:
    regex = compiled_pattern(shape.metadata["pattern"])
    low, high = shape.metadata.get("min", 0), shape.metadata.get("max", 10**9)
    for value in PATTERN_BREAKERS:
        if low <= len(value) <= high and regex is not None and not regex.fullmatch(value):
            return value
    return None


def _violations(  # noqa: C901 (one branch per kind of constraint, as the model has them)
    shape: Shape, path: tuple[Any, ...], location: str | None) -> Iterator[tuple[Any, str]]:
    """(value, expected message fragment) for each constraint of ``shape`` itself."""
    meta, where = shape.metadata, _wire_path(path)
    at = f"at '{where}' failed to satisfy constraint: "
    low, high = meta.get("min"), meta.get("max")
    kind = shape.type_name
    if kind == "string":
        if meta.get("enum"):
            yield "NOT_AN_ENUM_VALUE", at + "Member must satisfy enum value set"
        if meta.get("pattern"):
            breaker = _pattern_breaker(shape)
            if breaker is not None:
                yield breaker, at + "Member must satisfy regular expression pattern"
        if low and location not in ("uri", "querystring"):
            yield "a" * (low - 1), at + f"Member must have length greater than or equal to {low}"
        if high is not None and high < 300_000:
            yield "a" * (high + 1), at + f"Member must have length less than or equal to {high}"
        if location is None:
            yield 12345, at + "Member must be a string"
    elif kind in ("integer", "long"):
        if low is not None:
            yield low - 1, at + f"Member must have value greater than or equal to {low}"
        if high is not None:
            yield high + 1, at + f"Member must have value less than or equal to {high}"
    elif kind == "blob" and location is None:
        if low:
            yield b"" if low == 1 else b"a" * (low - 1), at + "Member must have length greater than or equal"
        if high is not None:
            yield b"a" * (high + 1), at + f"Member must have length less than or equal to {high}"
    elif kind == "list":
        if low:
            yield [], at + f"Member must have length greater than or equal to {low}"
        if high is not None and high < 10_000:
            yield (
                [_sample(shape.member)] * (high + 1),
                at + f"Member must have length less than or equal to {high}",
            )
    elif kind == "map" and high is not None:
        yield {f"k{i}": _sample(shape.value) for i in range(high + 1)}, at + "Member must have length less"


def _sample(shape: Shape) -> Any:
    """Some value of the right type (its own constraints may fail; only the list/map size is under test)."""
    return {"string": "x", "integer": 1, "long": 1, "boolean": True, "blob": b"x", "structure": {},
            "list": [], "map": {}}.get(shape.type_name, "x")  # fmt: skip


def _walk(
    shape: Shape, path: tuple[Any, ...], depth: int, location: str | None = None
) -> Iterator[tuple[tuple[str | int, ...], Any, str]]:
    yield from ((path, value, expect) for value, expect in _violations(shape, path, location))
    if depth >= MAX_DEPTH:
        return
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            loc = member.serialization.get("location")
            child = (*path, name)
            if name in shape.required_members and loc is None and not member.metadata.get("idempotencyToken"):
                if shape.serialization.get("payload") == name:
                    # botocore sends an absent payload structure as ``{}``: its own required members are
                    # then null (a union: none set), reported under this member's path.
                    yield child, MISSING, f"at '{_wire_path(child)}"
                elif member.metadata.get("union") is None:
                    yield (
                        child,
                        MISSING,
                        f"Value null at '{_wire_path(child)}' failed to satisfy constraint: "
                        "Member must not be null",
                    )
            yield from _walk(member, child, depth + 1, loc or location)
    elif shape.type_name == "list":
        yield from _walk(shape.member, (*path, 0), depth + 1, location)
    elif shape.type_name == "map":
        yield from _walk(shape.value, (*path, MapKey("k")), depth + 1, location)


def cases() -> list[Case]:
    model = botocore.session.get_session().get_service_model("medical-imaging")
    found = []
    for name in model.operation_names:
        shape = model.operation_model(name).input_shape
        if shape is None:
            continue
        for path, value, expect in _walk(shape, (), 0):
            found.append(Case(name, path, value, expect))
    return found


def _uri_defaults(op: OperationModel) -> dict[str, Any]:
    """Well-formed values for the URI members (so the request routes); the case overrides one of them."""
    defaults = {}
    for name, member in op.input_shape.members.items():
        if member.serialization.get("location") == "uri":
            if member.metadata.get("pattern", "").startswith("arn:"):
                defaults[name] = "arn:aws:medical-imaging:us-east-1:123456789012:datastore/" + "0" * 32
            else:
                defaults[name] = "0" * 32
    return defaults


def _place(params: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    path = tuple(step.key if isinstance(step, MapKey) else step for step in path)
    node: Any = params
    for step, nxt in zip(path, path[1:], strict=False):
        if isinstance(step, int):
            while len(node) <= step:
                node.append([] if isinstance(nxt, int) else {})
            node = node[step]
        else:
            node = node.setdefault(step, [] if isinstance(nxt, int) else {})
    last = path[-1]
    if value is MISSING:
        if isinstance(node, dict):
            node.pop(last, None)
        return
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value


ALL_CASES = cases()


@pytest.fixture(scope="module")
def raw_client(ahi_local: str) -> Any:
    config = Config(parameter_validation=False, inject_host_prefix=False, retries={"max_attempts": 1})
    return boto3.client(
        "medical-imaging",
        endpoint_url=ahi_local,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def test_the_walk_covers_every_operation_and_kind_of_constraint() -> None:
    model = botocore.session.get_session().get_service_model("medical-imaging")
    with_input = {n for n in model.operation_names if model.operation_model(n).input_shape is not None}
    assert {c.operation for c in ALL_CASES} == with_input
    kinds = {c.expect.split("Member must ")[-1].split(" ")[0] for c in ALL_CASES}
    assert {"satisfy", "have", "not", "be"} <= kinds


def test_every_model_constraint_is_enforced(raw_client: Any) -> None:
    """One request per constraint (about 200); all failures are collected and reported together."""
    model = raw_client.meta.service_model
    missed = []
    for case in ALL_CASES:
        op = model.operation_model(case.operation)
        params = _uri_defaults(op)
        if case.value is not MISSING or len(case.path) > 1:
            _place(params, case.path, case.value)
        method = getattr(raw_client, botocore.xform_name(case.operation))
        try:
            result = method(**params)
            missed.append(f"{case.id}: accepted ({str(result)[:80]})")
            continue
        except ClientError as exc:
            error = exc.response["Error"]
        if error["Code"] != "ValidationException" or case.expect not in error.get("Message", ""):
            missed.append(f"{case.id}: {error['Code']}: {error.get('Message', '')[:300]}")
    assert not missed, f"{len(missed)} of {len(ALL_CASES)} constraints not enforced:\n" + "\n".join(missed)

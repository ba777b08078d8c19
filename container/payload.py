"""Parse and validate an invocation body (plain functions, no MMS).

Body (JSON)::

    {"inputs": [{"datastoreId": "...", "imageSetId": "..."},            # or
                {"datastoreId": "...", "studyInstanceUid": "..."}, ...],
     "output": {"s3Uri": "s3://bucket/prefix",      # optional: where SEG, STL and report go
                "inlineSeg": false,                 # optional: SEG base64 in the response (if < 6 MB)
                "writeBackToAHI": {                 # optional, opt-in: store the SEG in AHI
                    "method": "stow-rs",            # default: StoreDICOM, synchronous, returns the image set
                    "datastoreId": "..."}}}         # default: the input's datastore
                # or {"method": "import-job", "dataAccessRoleArn": "arn:aws:iam::...:role/...",
                #     "datastoreId": "...", "wait": false}: staged in output.s3Uri, StartDICOMImportJob

A bare input object (``{"datastoreId", "imageSetId"}``, the asynchronous endpoint's S3 input object) is
accepted as one input. Every input is validated by ``app.request.SegRequest.from_json`` before any work
starts.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ahi_connector.s3uri import S3Uri, S3UriError
from app.untrusted import brief, loads

#: At most this many inputs per invocation (each runs the full pipeline; keep requests within the timeout).
MAX_INPUTS = 16
_ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/.+$")
_OUTPUT_KEYS = {"s3Uri", "inlineSeg", "writeBackToAHI"}
_WRITE_BACK_KEYS = {"method", "dataAccessRoleArn", "datastoreId", "wait"}
WRITE_BACK_METHODS = ("stow-rs", "import-job")


class PayloadError(ValueError):
    """The body is not a valid invocation; ``http_status`` 400; the message names the field and the fix."""

    http_status = 400


@dataclasses.dataclass(frozen=True)
class WriteBack:
    role_arn: str | None = None
    datastore_id: str | None = None
    wait: bool = False
    method: str = "stow-rs"


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    s3: S3Uri | None = None
    inline_seg: bool = False
    write_back: WriteBack | None = None


@dataclasses.dataclass(frozen=True)
class Invocation:
    """A validated invocation: the raw input objects, their parsed requests, and the output options."""

    raw_inputs: tuple[dict[str, Any], ...]
    requests: tuple[Any, ...]  # app.service.SegRequest, one per raw input
    output: OutputOptions


def _names(keys: Any) -> str:
    """Sorted field names for a message, each and the list bounded (a client may send huge keys)."""
    names = sorted(str(k) for k in keys)
    shown = [brief(k) for k in names[:8]]
    return "[" + ", ".join(shown) + (f", … {len(names) - 8} more" if len(names) > 8 else "") + "]"


def decode_body(body: bytes | bytearray | str | dict[str, Any] | None) -> dict[str, Any]:
    """Body bytes → JSON object, or :class:`PayloadError` saying what is wrong with it."""
    if isinstance(body, dict):
        return body
    if body is None or len(body) == 0:
        raise PayloadError(
            'empty request body; send JSON like {"inputs": [{"datastoreId": ..., "imageSetId": ...}]}'
        )
    try:
        obj = loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(
            f"request body is not valid JSON ({exc}); send Content-Type application/json"
        ) from exc
    if not isinstance(obj, dict):
        raise PayloadError(f"request body must be a JSON object, not {type(obj).__name__}")
    return obj


def _parse_write_back(obj: Any) -> WriteBack | None:
    if obj is None or obj is False:
        return None
    if not isinstance(obj, dict):
        raise PayloadError(
            "output.writeBackToAHI must be an object with dataAccessRoleArn (and optional datastoreId)"
        )
    unknown = set(obj) - _WRITE_BACK_KEYS
    if unknown:
        raise PayloadError(
            f"output.writeBackToAHI: unknown field(s) {_names(unknown)}; allowed {sorted(_WRITE_BACK_KEYS)}"
        )
    method = obj.get("method", "stow-rs")
    if method not in WRITE_BACK_METHODS:
        raise PayloadError(
            f"output.writeBackToAHI.method={brief(method)} is not one of {list(WRITE_BACK_METHODS)}"
        )
    if method == "stow-rs":
        extra = sorted({"dataAccessRoleArn", "wait"} & set(obj))
        if extra:
            raise PayloadError(
                f"output.writeBackToAHI: {extra} belong to method import-job; stow-rs stores the SEG "
                'synchronously with the caller\'s own credentials (drop them, or set "method": "import-job")'
            )
    role = obj.get("dataAccessRoleArn")
    if method == "import-job" and (not isinstance(role, str) or not _ROLE_ARN.match(role)):
        raise PayloadError(
            f"output.writeBackToAHI.dataAccessRoleArn={brief(role)} is not an IAM role ARN "
            "(arn:aws:iam::<account>:role/<name>); AHI reads the SEG from S3 with this role"
        )
    datastore = obj.get("datastoreId")
    if datastore is not None:
        from app.errors import RequestError
        from app.request import check_ahi_id

        try:
            check_ahi_id("output.writeBackToAHI.datastoreId", datastore)
        except RequestError as exc:
            raise PayloadError(str(exc)) from exc
    wait = obj.get("wait", False)
    if not isinstance(wait, bool):
        raise PayloadError(f"output.writeBackToAHI.wait must be true or false, not {brief(wait)}")
    return WriteBack(role_arn=role, datastore_id=datastore, wait=wait, method=method)


def parse_output(obj: Any, default_s3: S3Uri | None = None) -> OutputOptions:
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise PayloadError(
            'output must be an object: {"s3Uri": ..., "inlineSeg": ..., "writeBackToAHI": ...}'
        )
    unknown = set(obj) - _OUTPUT_KEYS
    if unknown:
        raise PayloadError(f"output: unknown field(s) {_names(unknown)}; allowed {sorted(_OUTPUT_KEYS)}")
    try:
        s3 = S3Uri.parse(obj["s3Uri"], "output.s3Uri") if obj.get("s3Uri") is not None else default_s3
    except S3UriError as exc:
        raise PayloadError(str(exc)) from exc
    inline = obj.get("inlineSeg", False)
    if not isinstance(inline, bool):
        raise PayloadError(f"output.inlineSeg must be true or false, not {brief(inline)}")
    write_back = _parse_write_back(obj.get("writeBackToAHI"))
    if write_back is not None and write_back.method == "import-job" and s3 is None:
        raise PayloadError(
            "output.writeBackToAHI method import-job needs output.s3Uri: the SEG is staged there for the "
            "AHI import job"
        )
    return OutputOptions(s3=s3, inline_seg=inline, write_back=write_back)


def parse_invocation(
    body: bytes | bytearray | str | dict[str, Any] | None, default_s3: S3Uri | None = None
) -> Invocation:
    """Validate a whole invocation; raises :class:`PayloadError` (400) naming the bad field."""
    from app.errors import RequestError
    from app.request import SegRequest

    obj = decode_body(body)
    if "inputs" in obj:
        inputs = obj["inputs"]
        unknown = set(obj) - {"inputs", "output"}
        if unknown:
            raise PayloadError(f"unknown top-level field(s) {_names(unknown)}; allowed ['inputs', 'output']")
    else:
        inputs = [{k: v for k, v in obj.items() if k != "output"}]
    if not isinstance(inputs, list) or not inputs:
        raise PayloadError(
            '"inputs" must be a non-empty list of {"datastoreId", "imageSetId"|"studyInstanceUid"}'
        )
    if len(inputs) > MAX_INPUTS:
        raise PayloadError(f'"inputs" has {len(inputs)} items; at most {MAX_INPUTS} per invocation')
    requests = []
    for index, item in enumerate(inputs):
        if not isinstance(item, dict):
            raise PayloadError(f"inputs[{index}] must be an object, not {type(item).__name__}")
        if not isinstance(item.get("datastoreId"), str):
            # The endpoint reads from AHI only; local folders of the serving host are not an input.
            raise PayloadError(
                f"inputs[{index}] needs datastoreId plus imageSetId or studyInstanceUid (got fields "
                f"{_names(item)})"
            )
        try:
            requests.append(SegRequest.from_json(item))
        except RequestError as exc:
            raise PayloadError(f"inputs[{index}]: {exc}") from exc
    output = parse_output(obj.get("output"), default_s3)
    return Invocation(raw_inputs=tuple(inputs), requests=tuple(requests), output=output)

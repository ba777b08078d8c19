"""Media types and multipart/related bodies (RFC 2046 / PS3.18 8.6, 8.7), shared by the DICOMweb client and,
as the one implementation, by ahi-local's DICOMweb service."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable


class MultipartError(ValueError):
    """A multipart body that cannot be split; the message says what is wrong and where."""


@dataclasses.dataclass(frozen=True)
class MediaType:
    """One media type (or Accept media range) with lower-cased name and parameter names."""

    name: str
    params: dict[str, str]
    q: float = 1.0

    def param(self, key: str, default: str | None = None) -> str | None:
        return self.params.get(key, default)

    def __str__(self) -> str:
        extra = "".join(f'; {k}="{v}"' if "/" in v else f"; {k}={v}" for k, v in self.params.items())
        return self.name + extra


def split_header(text: str, sep: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    depth = False
    for ch in text:
        if ch == '"':
            depth = not depth
        if ch == sep and not depth:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return [part.strip() for part in out if part.strip()]


def parse_media_type(text: str) -> MediaType:
    pieces = split_header(text, ";")
    if not pieces or "/" not in pieces[0]:
        raise ValueError(f"{text!r} is not a media type")
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        key, _, value = piece.partition("=")
        key, value = key.strip().lower(), value.strip().strip('"')
        if key == "q":
            try:
                q = float(value)
            except ValueError as exc:
                raise ValueError(f"q={value!r} is not a number") from exc
        else:
            params[key] = value
    return MediaType(pieces[0].lower(), params, q)


@dataclasses.dataclass(frozen=True)
class Part:
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


def split_multipart(body: bytes, boundary: str) -> list[Part]:
    """The parts of a multipart body (RFC 2046); a missing boundary, a part without a header block or a
    missing close delimiter is a 400 naming what is wrong."""
    delimiter = b"--" + boundary.encode("latin-1")
    pos = body.find(delimiter)
    if pos < 0:
        raise MultipartError(f"malformed multipart body: boundary {boundary!r} never occurs")
    parts: list[Part] = []
    pos += len(delimiter)
    while True:
        if body[pos : pos + 2] == b"--":
            break
        if body[pos : pos + 2] != b"\r\n":
            raise MultipartError(
                f"malformed multipart body: no CRLF after delimiter of part {len(parts) + 1}"
            )
        pos += 2
        end = body.find(b"\r\n" + delimiter, pos)
        if end < 0:
            raise MultipartError(
                f"malformed multipart body: part {len(parts) + 1} has no closing delimiter --{boundary}--"
            )
        head_end = body.find(b"\r\n\r\n", pos, end)
        if head_end < 0 and not body[pos:end].startswith(b"\r\n"):
            raise MultipartError(f"malformed multipart body: part {len(parts) + 1} has no header block")
        if head_end < 0:
            head, content = b"", body[pos + 2 : end]
        else:
            head, content = body[pos:head_end], body[head_end + 4 : end]
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            if not line.strip():
                continue
            key, sep, value = line.partition(":")
            if not sep:
                raise MultipartError(
                    f"malformed multipart body: header line {line[:80]!r} of part {len(parts) + 1}"
                )
            headers[key.strip().lower()] = value.strip()
        parts.append(Part(headers, content))
        pos = end + 2 + len(delimiter)
    if not parts:
        raise MultipartError("malformed multipart body: no parts")
    return parts


def multipart_body(parts: Iterable[tuple[str, bytes, dict[str, str]]]) -> tuple[bytes, str]:
    """Body and boundary of a multipart/related response from (content type, bytes, extra headers)."""
    boundary = secrets.token_hex(16)
    chunks: list[bytes] = []
    for content_type, data, extra in parts:
        head = f"--{boundary}\r\nContent-Type: {content_type}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
        chunks += [head.encode("latin-1"), b"\r\n", data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode("latin-1"))
    return b"".join(chunks), boundary

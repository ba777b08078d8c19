"""The one S3 URI type of the project: ``s3://bucket/key-or-prefix`` parsed, validated and joined.

Bucket names follow S3's rules for new buckets (3-63 characters of lower-case letters, digits, dots and
hyphens, starting and ending with a letter or digit); the key is kept without leading or trailing ``/``, so a
prefix and an object key are spelled the same way and :meth:`S3Uri.child` joins parts without doubled slashes.
"""

from __future__ import annotations

import dataclasses
import re

_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")


class S3UriError(ValueError):
    """A string is not an ``s3://bucket/key`` URI; the message names the field, the value and the fix."""

    http_status = 400


@dataclasses.dataclass(frozen=True)
class S3Uri:
    """A bucket and a key (or prefix) inside it, ``""`` for the bucket root."""

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: object, field: str = "S3 URI") -> S3Uri:
        """Parse ``uri``; raise :class:`S3UriError` naming ``field`` when it is not an S3 URI."""
        match = _S3_URI.match(uri.strip()) if isinstance(uri, str) else None
        if match is None:
            shown = repr(uri)
            shown = shown if len(shown) <= 200 else shown[:200] + "…"
            raise S3UriError(f"{field}={shown} is not an S3 URI; use s3://bucket/prefix")
        return cls(match["bucket"], (match["key"] or "").strip("/"))

    def child(self, *parts: str) -> S3Uri:
        """This location with ``parts`` appended as path segments."""
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p and p.strip("/"))
        return S3Uri(self.bucket, key)

    @property
    def uri(self) -> str:
        """``s3://bucket/key`` (``s3://bucket`` for the root)."""
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    @property
    def prefix(self) -> str:
        """The key as a folder prefix: ``key/``, or ``""`` for the bucket root."""
        return f"{self.key}/" if self.key else ""

    def __str__(self) -> str:
        return self.uri

"""The door of ahi-local: request-body limit, body read timeout and SigV4 verification (an ASGI middleware).

Every HTTP request passes :class:`RequestGuard` before any route sees it:

* a body larger than :data:`MAX_BODY_BYTES` is refused with 413 from its ``Content-Length`` before it is
  read (or as soon as the streamed bytes pass the limit); the largest AHI request (CopyImageSet's 260 000
  character ``copiableAttributes``) fits with room to spare;
* a body that stops arriving (a false ``Content-Length``, a slow client) is answered 408 after
  :data:`BODY_IDLE_TIMEOUT_S` without a byte, or :data:`BODY_TOTAL_TIMEOUT_S` in all, and the connection
  closes;
* with credentials configured (always when the server listens on a non-loopback address), every request
  except ``GET /_local/health`` must carry an AWS Signature Version 4 ``Authorization`` header made with one
  of them: the signature is recomputed with botocore's own signer over the method, path, query, signed
  headers and body, and compared in constant time; a timestamp more than 15 minutes off is refused. Errors
  are shaped like AWS's (``MissingAuthenticationTokenException``, ``UnrecognizedClientException``,
  ``InvalidSignatureException``, all 403).
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .ids import new_id

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 2 * 1024 * 1024
#: STOW-RS (StoreDICOM, StoreDICOMStudy) takes "up to 1GB of DICOM data per request" (AHI developer guide,
#: "dicomweb-storing"); every other request keeps MAX_BODY_BYTES.
MAX_STOW_BODY_BYTES = 1 << 30
STOW_PATH = re.compile(r"^/datastore/[^/]+/studies(?:/[^/]+)?/?$")
BODY_IDLE_TIMEOUT_S = 10.0
BODY_TOTAL_TIMEOUT_S = 30.0
MAX_CLOCK_SKEW_S = 15 * 60
SERVICE = "medical-imaging"
OPEN_PATHS = {("GET", "/_local/health")}
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/\s]+)/(?P<date>\d{8})/(?P<region>[^/\s]+)/(?P<service>[^/\s]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;\-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class GuardError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def verify_sigv4(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Mapping[str, str],
    now: float | None = None,
) -> str:
    """Check an AWS SigV4-signed request against ``credentials`` (access key ID → secret); returns the access
    key ID, raises :class:`GuardError` (403) saying what is wrong."""
    header = headers.get("authorization")
    if not header:
        raise GuardError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTHORIZATION.match(header.strip())
    if match is None:
        raise GuardError(
            403, "IncompleteSignatureException", "Authorization header is not an AWS4-HMAC-SHA256 signature"
        )
    access_key = match["key"]
    secret = credentials.get(access_key)
    if secret is None:
        raise GuardError(
            403, "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if match["service"] != SERVICE:
        raise GuardError(403, "InvalidSignatureException", f"Credential should be scoped to {SERVICE!r}")
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc
        )
    except ValueError:
        raise GuardError(403, "IncompleteSignatureException", "X-Amz-Date is missing or malformed") from None
    skew = abs((now if now is not None else time.time()) - signed_at.timestamp())
    if skew > MAX_CLOCK_SKEW_S or not amz_date.startswith(match["date"]):
        raise GuardError(403, "InvalidSignatureException", "Signature expired or not yet valid (X-Amz-Date)")
    signed = match["signed"].split(";")
    if "host" not in signed or any(name not in headers for name in signed):
        raise GuardError(
            403, "IncompleteSignatureException", "a signed header is missing (host must be signed)"
        )
    request = AWSRequest(method=method, url=url, data=body, headers={name: headers[name] for name in signed})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret), SERVICE, match["region"])
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise GuardError(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method.",
        )
    return access_key


class RequestGuard:
    """ASGI middleware in front of the ahi-local app (see the module docstring)."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        credentials: Mapping[str, str] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        idle_timeout_s: float = BODY_IDLE_TIMEOUT_S,
        total_timeout_s: float = BODY_TOTAL_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.credentials = dict(credentials) if credentials else None
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.total_timeout_s = total_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = (
            MAX_STOW_BODY_BYTES
            if scope["method"] == "POST" and STOW_PATH.match(scope["path"])
            else self.max_body_bytes
        )
        try:
            body = await self._read_body(headers, receive, limit)
            if body is None:
                return  # the client went away
            if self.credentials is not None and (scope["method"], scope["path"]) not in OPEN_PATHS:
                verify_sigv4(scope["method"], _url(scope, headers), headers, body, self.credentials)
        except GuardError as exc:
            if exc.status != 403:
                logger.warning("%s %s refused: %s", scope["method"], scope["path"], exc.message)
            await _send_error(send, exc)
            return
        delivered = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, headers: Mapping[str, str], receive: Receive, limit: int) -> bytes | None:
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise GuardError(400, "ValidationException", "Content-Length is not a number")
            if int(declared) > limit:
                raise self._too_large(declared, limit)
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.total_timeout_s
        while True:
            wait = min(self.idle_timeout_s, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.001))
            except asyncio.TimeoutError:
                raise GuardError(
                    408,
                    "RequestTimeoutException",
                    f"the request body stopped arriving ({size} of {declared or 'unknown'} bytes after "
                    f"{self.total_timeout_s - max(deadline - time.monotonic(), 0):.0f} s; bodies must arrive "
                    f"within {self.idle_timeout_s:.0f} s of silence and {self.total_timeout_s:.0f} s in all)",
                ) from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large(f"more than {limit}", limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    def _too_large(size: str, limit: int) -> GuardError:
        why = (
            "StoreDICOM takes up to 1 GB per request; split the instances over several requests"
            if limit == MAX_STOW_BODY_BYTES
            else "no AWS HealthImaging request needs more"
        )
        return GuardError(
            413,
            "RequestEntityTooLargeException",
            f"request body is {size} bytes; ahi-local accepts at most {limit} bytes ({why})",
        )


def _url(scope: Scope, headers: Mapping[str, str]) -> str:
    raw_path = scope.get("raw_path") or scope["path"].encode()
    url = f"http://{headers.get('host', 'localhost')}{raw_path.decode('latin-1')}"
    query = scope.get("query_string", b"")
    return f"{url}?{query.decode('latin-1')}" if query else url


async def _send_error(send: Send, error: GuardError) -> None:
    body = json.dumps({"message": error.message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-amzn-errortype", error.code.encode()),
                (b"x-amzn-requestid", new_id().encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

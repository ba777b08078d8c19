"""GetImageFrame transports: the lean one (urllib3 pool + botocore's SigV4 signer) and botocore itself.

Fetching a frame through a botocore client costs about 4 ms of client CPU (parameter validation, request
serialisation, endpoint resolution, event hooks, signing, response parsing), more than decoding the frame.
:class:`LeanFrameTransport` sends the same request itself: the URL is built once per image set from the
client's resolved endpoint (with the ``runtime-`` host prefix when the client injects it), every request is
signed with botocore's own ``SigV4Auth`` using the client's credentials (``get_frozen_credentials()`` per
request, so refreshable credentials from the default chain refresh exactly as botocore refreshes them), and it
goes over one keep-alive ``urllib3`` connection pool. Responses are turned into the exceptions botocore would
raise for the same bytes: error responses are parsed by botocore's ``rest-json`` parser into the client's
modelled ``ClientError`` classes, socket failures become botocore's ``ReadTimeoutError``,
``EndpointConnectionError``, ``ConnectionClosedError`` ..., a short body ``IncompleteReadError``. So the frame
fetcher's retry, deadline and error mapping are the same for both transports.

:func:`select_transport` picks the lean transport automatically when the client allows it (a botocore
``medical-imaging`` client, SigV4, credentials available, no proxy, http/https endpoint) and falls back to
:class:`BotocoreFrameTransport` otherwise; ``transport="botocore"`` forces the fallback.

Each attempt is one HTTP request (no retries inside the transport): :mod:`ahi_connector.fetch` retries frames.
HTTP/1.1 carries one request per connection at a time, so the pool holds as many connections as requests in
flight (AHI's guidance of about 20 concurrent requests per connection applies to multiplexed HTTP/2 clients).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.parse
from typing import Any, Protocol

import botocore.exceptions as bce
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import DEFAULT_CA_BUNDLE
from botocore.parsers import create_parser

from .errors import AHIConfigError, FrameRef

log = logging.getLogger(__name__)

OPERATION = "GetImageFrame"
TRANSPORTS = ("auto", "lean", "botocore")
#: Per-attempt read timeout of one frame request (seconds without a byte); see fetch.FrameBudget.
DEFAULT_FRAME_READ_TIMEOUT_S = 10.0


class FrameTransport(Protocol):
    """Sends one GetImageFrame request: ``(bytes, content type)``, or the exception botocore would raise."""

    name: str
    read_timeout_s: float

    def get_frame(self, ref: FrameRef) -> tuple[bytes, str | None]: ...

    def close(self) -> None: ...


class BotocoreFrameTransport:
    """GetImageFrame through the botocore client itself (the reference and the fallback)."""

    name = "botocore"

    def __init__(self, client: Any) -> None:
        self.client = client
        config = getattr(getattr(client, "meta", None), "config", None)
        self.read_timeout_s = float(getattr(config, "read_timeout", 60.0))

    def get_frame(self, ref: FrameRef) -> tuple[bytes, str | None]:
        resp = self.client.get_image_frame(
            datastoreId=ref.datastore_id,
            imageSetId=ref.image_set_id,
            imageFrameInformation={"imageFrameId": ref.frame_id},
        )
        body = resp["imageFrameBlob"]
        try:
            data = body.read()
        finally:
            body.close()
        return data, resp.get("contentType")

    def close(self) -> None:
        pass


def _lean_blocker(client: Any) -> str | None:
    """Why the lean transport cannot stand in for this client's GetImageFrame, or None when it can."""
    meta: Any = getattr(client, "meta", None)
    model = getattr(meta, "service_model", None)
    if meta is None or model is None or getattr(model, "service_name", None) != "medical-imaging":
        return "not a botocore medical-imaging client"
    config = meta.config
    if (config.signature_version or "v4") not in ("v4", "s3v4") or model.signature_version != "v4":
        return f"signature version {config.signature_version!r}"
    if config.proxies or any(
        os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
    ):
        return "a proxy is configured"
    if config.client_cert:
        return "a client certificate is configured"
    scheme = urllib.parse.urlsplit(meta.endpoint_url or "").scheme
    if scheme not in ("http", "https"):
        return f"endpoint {meta.endpoint_url!r}"
    try:
        credentials = client._get_credentials()
    except Exception as exc:  # noqa: BLE001 - any failure means: let botocore handle it
        return f"credentials unavailable ({type(exc).__name__})"
    if credentials is None:
        return "no credentials (unsigned client)"
    return None


class LeanFrameTransport:
    """GetImageFrame over a urllib3 keep-alive pool, signed with botocore's SigV4Auth (see the module doc)."""

    name = "lean"

    def __init__(
        self, client: Any, max_connections: int = 16, read_timeout_s: float = DEFAULT_FRAME_READ_TIMEOUT_S
    ) -> None:
        reason = _lean_blocker(client)
        if reason:
            raise AHIConfigError(f"the lean GetImageFrame transport cannot be used: {reason}")
        meta = client.meta
        self._client = client
        self._credentials = client._get_credentials()
        self._region = meta.region_name
        self._signing_name = meta.service_model.signing_name or "medical-imaging"
        self._operation = meta.service_model.operation_model(OPERATION)
        self._parser = create_parser("rest-json")
        self._user_agent = f"{meta.config.user_agent or 'Botocore'} ahi-connector-lean"
        parts = urllib.parse.urlsplit(meta.endpoint_url)
        prefix = self._operation.endpoint.get("hostPrefix", "") if meta.config.inject_host_prefix else ""
        self._origin = f"{parts.scheme}://{prefix}{parts.netloc}"  # the endpoint, resolved once
        self._root = parts.path.rstrip("/")
        self.read_timeout_s = min(float(meta.config.read_timeout), read_timeout_s)
        timeout = urllib3.Timeout(connect=meta.config.connect_timeout, read=self.read_timeout_s)
        self._pool_kwargs: dict[str, Any] = {
            "maxsize": max_connections,
            "block": False,
            "timeout": timeout,
            "retries": False,
        }
        if parts.scheme == "https":
            self._pool_kwargs["ca_certs"] = DEFAULT_CA_BUNDLE
        self._pool: Any = None
        self._lock = threading.Lock()
        self._paths: dict[tuple[str, str], str] = {}

    def _connections(self) -> Any:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = urllib3.connection_from_url(self._origin, **self._pool_kwargs)
                pool = self._pool
        return pool

    def _path(self, ref: FrameRef) -> str:
        key = (ref.datastore_id, ref.image_set_id)
        path = self._paths.get(key)
        if path is None:
            quote = urllib.parse.quote
            path = (
                self._root
                + f"/datastore/{quote(ref.datastore_id, safe='')}/imageSet/{quote(ref.image_set_id, safe='')}"
                + "/getImageFrame"
            )
            with self._lock:
                self._paths[key] = path
        return path

    def _signed_headers(self, path: str, body: bytes) -> dict[str, str]:
        request = AWSRequest(
            method="POST",
            url=self._origin + path,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": self._user_agent},
        )
        credentials = self._credentials.get_frozen_credentials()  # refreshes like botocore's signer
        SigV4Auth(credentials, self._signing_name, self._region).add_auth(request)
        return dict(request.headers.items())

    def get_frame(self, ref: FrameRef) -> tuple[bytes, str | None]:
        path = self._path(ref)
        body = json.dumps({"imageFrameId": ref.frame_id}).encode()
        headers = self._signed_headers(path, body)
        url = self._origin + path
        try:
            resp = self._connections().urlopen(
                "POST",
                path,
                body=body,
                headers=headers,
                retries=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                enforce_content_length=False,
            )
        except urllib3.exceptions.SSLError as exc:
            raise bce.SSLError(endpoint_url=url, error=exc) from exc
        except urllib3.exceptions.NewConnectionError as exc:
            raise bce.EndpointConnectionError(endpoint_url=url, error=exc) from exc
        except urllib3.exceptions.ConnectTimeoutError as exc:
            raise bce.ConnectTimeoutError(endpoint_url=url, error=exc) from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise bce.ReadTimeoutError(endpoint_url=url, error=exc) from exc
        except urllib3.exceptions.ProtocolError as exc:
            raise bce.ConnectionClosedError(endpoint_url=url, error=exc) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise bce.HTTPClientError(error=exc) from exc
        try:
            data = self._read(resp, url)
        finally:
            resp.release_conn()
        if resp.status >= 300:
            self._raise_error(resp, data)
        return data, resp.headers.get("Content-Type")

    @staticmethod
    def _read(resp: Any, url: str) -> bytes:
        try:
            data = bytes(resp.read())
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise bce.ReadTimeoutError(endpoint_url=url, error=exc) from exc
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError, OSError) as exc:
            raise bce.ResponseStreamingError(error=exc) from exc
        expected = resp.headers.get("Content-Length")
        if expected is not None and expected.isdigit() and int(expected) != len(data):
            raise bce.IncompleteReadError(actual_bytes=len(data), expected_bytes=int(expected))
        return data

    def _raise_error(self, resp: Any, data: bytes) -> None:
        """The modelled ClientError botocore raises for this error response (same parser, same classes)."""
        parsed = self._parser.parse(
            {"status_code": resp.status, "headers": dict(resp.headers.items()), "body": data},
            self._operation.output_shape,
        )
        code = parsed.get("Error", {}).get("Code")
        error_class = self._client.exceptions.from_code(code) if code else bce.ClientError
        raise error_class(parsed, OPERATION)

    def close(self) -> None:
        """Close the pooled connections; a later request opens new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def select_transport(
    client: Any,
    choice: str = "auto",
    *,
    max_connections: int = 16,
    read_timeout_s: float = DEFAULT_FRAME_READ_TIMEOUT_S,
) -> FrameTransport:
    """The frame transport for ``client``: ``auto`` (lean when possible, else botocore), ``lean`` (fails with
    AHIConfigError naming the reason when it cannot be used) or ``botocore``."""
    if choice not in TRANSPORTS:
        raise AHIConfigError(f"transport={choice!r} is not one of {TRANSPORTS}")
    if choice == "botocore":
        return BotocoreFrameTransport(client)
    reason = _lean_blocker(client)
    if reason is None:
        return LeanFrameTransport(client, max_connections=max_connections, read_timeout_s=read_timeout_s)
    if choice == "lean":
        raise AHIConfigError(f"the lean GetImageFrame transport cannot be used: {reason}")
    log.debug("GetImageFrame through botocore: %s", reason)
    return BotocoreFrameTransport(client)

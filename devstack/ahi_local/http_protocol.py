"""The HTTP/1.1 protocol ahi-local serves with: uvicorn's h11 protocol plus a deadline for the request head.

The ASGI guard (:mod:`devstack.ahi_local.guard`) sees a request only once its head (request line and headers)
has arrived, so a client that connects and then sends nothing, or half a head, would hold its connection and
its socket for good. :class:`HeadTimeoutProtocol` gives every head ``head_timeout_s`` from the first moment
the server waits for it (a new connection, or the next request on a kept-alive one): the deadline is not moved
by further bytes, so a head sent a byte at a time cannot keep it open either. When it passes, the client gets
``408 RequestTimeoutException`` (the guard's error shape, as for a body that stops arriving) and the
connection closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from .ids import new_id

logger = logging.getLogger(__name__)


def head_timeout_protocol(head_timeout_s: float) -> type[H11Protocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with ``head_timeout_s``."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout_s": head_timeout_s})


class HeadTimeoutProtocol(H11Protocol):
    head_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_head():
            if self._head_timer is None:
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._waiting_for_head() or self.transport.is_closing():
            return
        limit = self.head_timeout_s
        logger.warning("no request head from %s within %.0f s: answered 408", self.client, limit)
        message = f"the request head (request line and headers) did not arrive within {limit:.0f} s"
        body = json.dumps({"message": message}).encode()
        head = (
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nx-amzn-errortype: RequestTimeoutException\r\n"
            f"x-amzn-requestid: {new_id()}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()

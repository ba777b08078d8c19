"""A TCP proxy on 127.0.0.1 that can reset connections on demand (ahi-local has no connection-reset fault).

The container reaches ahi-local through this proxy. ``reset_next(n, match)`` makes the proxy answer the next
``n`` client sends (HTTP requests, in practice; optionally only those containing ``match``, e.g. an
operation's path) with a TCP RST instead of forwarding them: the client sees "Connection reset by peer"
mid-request, like a load balancer dropping a connection. Everything else is forwarded byte for byte.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import struct
import threading

logger = logging.getLogger(__name__)

_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
_METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ")


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class ResettingProxy:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<upstream_port>; see the module doc. Use as a context manager."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._resets_left = 0
        self._match: bytes | None = None
        self.resets_done = 0
        self.connections = 0
        self.requests = 0  # client sends that start an HTTP request line
        self._watched: dict[bytes, int] = {}
        self._recent: collections.deque[tuple[bytes, tuple[str, int]]] = collections.deque(maxlen=2000)
        self._open: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="reset-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset_next(self, count: int, match: bytes | None = None) -> None:
        """Reset the next ``count`` client sends (only those containing ``match``, if given)."""
        with self._lock:
            self._resets_left = count
            self._match = match

    def peer_of(self, match: bytes) -> tuple[str, int] | None:
        """The client address (host, port) of the latest client send (head or body) containing ``match``."""
        with self._lock:
            for head, peer in reversed(self._recent):
                if match in head:
                    return peer
        return None

    def watch(self, match: bytes) -> None:
        """Start counting client sends that contain ``match`` (e.g. ``b"/getImageFrame"``, a frame ID)."""
        with self._lock:
            self._watched.setdefault(match, 0)

    def sends_containing(self, match: bytes) -> int:
        """Client sends containing ``match`` since :meth:`watch` was called for it."""
        with self._lock:
            return self._watched[match]

    def _take_reset(self, data: bytes) -> bool:
        with self._lock:
            if self._resets_left > 0 and (self._match is None or self._match in data[:4096]):
                self._resets_left -= 1
                self.resets_done += 1
                return True
            return False

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:
            _reset(client)  # upstream down (e.g. ahi-local restarting): the client sees a reset
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((client, upstream))
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client:
                    with self._lock:
                        self.requests += data.startswith(_METHODS)
                        self._recent.append((data[:4096], src.getpeername()))
                        for match in self._watched:
                            self._watched[match] += match in data[:4096]
                    if self._take_reset(data):
                        _reset(src)
                        _reset(dst)
                        return
                dst.sendall(data)
        except OSError:
            pass
        _close(dst)
        _close(src)
        with self._lock:
            self._open.difference_update((src, dst))

    def close(self) -> None:
        self._stopped.set()
        _close(self._listener)
        with self._lock:
            open_socks, self._open = list(self._open), set()
        for sock in open_socks:
            _close(sock)

    def __enter__(self) -> ResettingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""uvicorn's httptools protocol, writing each response in one send instead of two, with limits
on how long and how large a request may be.

uvicorn writes a response's status line and headers as soon as the app sends
`http.response.start`, and its body at `http.response.body`: two system calls and two TCP
segments, so the client wakes up twice too. Here the writes an event-loop turn makes are joined
and sent at the end of that turn; a body sent in the same turn as its headers (every response of
this app) goes out with them. Nothing waits longer than the turn it was written in.

uvicorn's httptools protocol has no limit of its own on a request's headers (h11's
h11_max_incomplete_event_size does not apply to it) and waits for a slow client forever: a
client trickling its headers a byte a second, or sending half a body, held its connection (and
a graceful shutdown) open for as long as it liked. Here a request must arrive whole within
READ_TIMEOUT seconds of its first byte (or of the connection), and its request line and
headers may take at most MAX_HEADER_BYTES; past either the connection is answered and closed.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["PROTOCOL", "CoalescingHttpToolsProtocol"]

# uvicorn's `http` setting that selects it.
PROTOCOL = "server.http:CoalescingHttpToolsProtocol"


class _CoalescingTransport:
    """A transport whose writes within one loop turn reach the socket as one write."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


_REFUSALS = {
    408: b"HTTP/1.1 408 Request Timeout\r\n",
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
}


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    # Read once per process from the environment, as uvicorn builds protocols itself.
    MAX_HEADER_BYTES = int(_env_number("NURTUREHUB_MAX_HEADER_BYTES", 64 * 1024))
    READ_TIMEOUT = _env_number("NURTUREHUB_REQUEST_READ_TIMEOUT", 15.0)

    # The limits cost a request two attribute stores and a find in each read of its headers: a
    # timer per request, and a Python call per header, cost contacts.get 6% of its server CPU
    # (bench/results/operations-20261205.md). One timer per connection looks at the request in
    # progress when it fires, and sleeps again until that request's deadline.
    _watch: asyncio.TimerHandle | None = None
    _reading_since: float | None = None  # when the request in progress began to arrive
    _in_headers = True
    _header_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        coalescing = _CoalescingTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(coalescing)  # type: ignore[arg-type]
        self._reading_since = self.loop.time()  # a connection that never sends a byte is closed too
        self._watch = self.loop.call_later(self.READ_TIMEOUT, self._check_reading)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            if self._reading_since is None:
                self._reading_since = self.loop.time()
            end = data.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else end
            if self._header_bytes > self.MAX_HEADER_BYTES:
                self._refuse(431, b"Request headers too large")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_since = None
        self._in_headers, self._header_bytes = True, 0  # the next request's headers come next
        super().on_message_complete()

    def _check_reading(self) -> None:
        self._watch = None
        if self.transport.is_closing():
            return
        since = self._reading_since
        if since is None:  # between requests: uvicorn's keep-alive timeout has those
            self._watch = self.loop.call_later(self.READ_TIMEOUT, self._check_reading)
            return
        left = since + self.READ_TIMEOUT - self.loop.time()
        if left > 0:
            self._watch = self.loop.call_later(left, self._check_reading)
        elif self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            # Nothing of a response is out yet; a body still awaited by the app ends as a
            # disconnect (uvicorn tells it so when the connection is lost).
            self._refuse(408, b"Request not received in time")
        else:
            self.transport.close()

    def _refuse(self, status: int, message: bytes) -> None:
        self.transport.write(
            _REFUSALS[status]
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: " + str(len(message)).encode() + b"\r\n"
            + b"connection: close\r\n\r\n"
            + message
        )
        self.transport.close()

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


class _RequestTooLarge(Exception):
    """Raised inside the parser to stop it; the answer is already on its way."""


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    # Read once per process from the environment, as uvicorn builds protocols itself.
    MAX_HEADER_BYTES = int(_env_number("NURTUREHUB_MAX_HEADER_BYTES", 64 * 1024))
    READ_TIMEOUT = _env_number("NURTUREHUB_REQUEST_READ_TIMEOUT", 15.0)

    _read_deadline: asyncio.TimerHandle | None = None
    _header_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        coalescing = _CoalescingTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(coalescing)  # type: ignore[arg-type]
        self._arm_read_deadline()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm_read_deadline()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        self._disarm_read_deadline()
        super().on_message_complete()

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.MAX_HEADER_BYTES:
            self._refuse(431, b"Request headers too large")
            raise _RequestTooLarge()  # uvicorn then answers 400 to a closed transport: dropped

    def _arm_read_deadline(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.READ_TIMEOUT, self._read_timed_out)

    def _disarm_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
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

"""The serving socket: bound before `serve` does anything else, handed to uvicorn when ready.

Binding first means a busy port is reported in one line before the embedded database starts or
a banner is printed, and the port cannot be taken while the database is prepared.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

__all__ = ["PortUnavailable", "bind", "serve"]

BACKLOG = 2048  # uvicorn's default


class PortUnavailable(Exception):
    """The address cannot be bound; the message says why in a line."""


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening), set up as uvicorn sets up its own."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortUnavailable(f"port {port} on {host} is in use (is another server running?)") from None
        reason = exc.strerror or type(exc).__name__
        raise PortUnavailable(f"cannot listen on {host} port {port}: {reason}") from None
    sock.set_inheritable(True)  # for uvicorn's worker processes
    return sock


def serve(sock: socket.socket, app: str, *, workers: int, **options: Any) -> int:
    """Run the app on `sock` (already listening) until stopped; uvicorn's exit status."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(app, workers=workers, backlog=BACKLOG, **options)
    server = uvicorn.Server(config)
    if workers > 1:
        Multiprocess(config, sockets=[sock]).run()
        return 0
    server.run(sockets=[sock])
    return 0 if server.started else 3

"""GET /explorer: the API explorer, a small self-contained page that reads /openrpc.json.

Three static files, read once: no build step, no CDN, no third-party request. The Content-Security-
Policy lets the page load its own script and style and talk to its own origin, nothing else.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["CSP", "explorer_routes"]

HERE = Path(__file__).resolve().parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_FILES = {
    "/explorer": ("index.html", "text/html; charset=utf-8"),
    "/explorer/explorer.js": ("explorer.js", "text/javascript; charset=utf-8"),
    "/explorer/explorer.css": ("explorer.css", "text/css; charset=utf-8"),
}


def explorer_routes() -> list[Route]:
    routes = []
    for path, (name, media_type) in _FILES.items():
        body = (HERE / name).read_bytes()

        async def serve(request: Request, body: bytes = body, media_type: str = media_type) -> Response:
            headers = {
                "Content-Security-Policy": CSP,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            }
            return Response(body, media_type=media_type, headers=headers)

        routes.append(Route(path, serve, methods=["GET"]))
    return routes

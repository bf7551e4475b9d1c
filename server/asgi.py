"""The ASGI entry point for `nurturehub serve` (and any ASGI server): the app from the environment."""

from __future__ import annotations

import os

from starlette.applications import Starlette

from server.app import create_app
from server.logs import configure_logging
from server.settings import Settings

__all__ = ["app_from_env"]


def app_from_env() -> Starlette:
    from server.cli import EXTRA_ROUTES, ROUTER, load

    configure_logging(os.environ.get("NURTUREHUB_LOG_LEVEL", "INFO"))
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set: start the server with 'nurturehub serve'")
    return create_app(Settings.from_env(url), load(ROUTER), extra_routes=load(EXTRA_ROUTES))

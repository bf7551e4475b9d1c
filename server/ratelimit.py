"""Rate limits per token and per organisation, in calls per minute, shared by every server
process on one database without a round trip per call.

Each process leases permits from PostgreSQL in blocks (one UPSERT on rate_limit_windows adds a
block to the minute's count, if the count is still under the limit) and spends them locally: a
call costs a dictionary look-up and a decrement. A key's next block is asked for when half of
the one in hand is spent, so a steady caller never waits for it; only the first call of a key
in a minute, in each process, waits for one round trip. Blocks start small and double within a
minute (up to MAX_BLOCK, and a fiftieth of the limit), so a quiet token holds few permits it
will not use while a busy one takes a round trip per hundreds of calls.

What holds, while the database answers: a key's permits granted in a minute, over every process,
are at most its limit plus one block less one (a block is added only while the count is under
the limit); calls admitted are at most the permits granted. A process may refuse a key while
other processes still hold unspent permits of it: at most a block each.

Windows are the database's minutes (date_trunc('minute', now())), so processes on machines
whose clocks differ still share one count; as with any fixed window, a caller may spend a
minute's limit at the end of one minute and again at the start of the next.

When the database cannot be reached (or has no rate_limit_windows: an older schema), the limiter
fails open: a key whose lease failed goes unlimited for FAIL_OPEN_SECONDS, then a lease is
tried again while its calls still go ahead; the calls so admitted are counted (fail_open_calls,
nurturehub_rate_limit_fail_open_total).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from uuid import UUID

from server.context import Principal
from server.db import sql
from server.errors import TooManyRequests
from server.ownconn import OwnConnection

__all__ = ["POLICIES", "RateLimiter"]

log = logging.getLogger("nurturehub.ratelimit")

WINDOW_SECONDS = 60
MAX_BLOCK = 1000
FIRST_BLOCK_SHARE = 16  # a minute's first block per process: the largest block / this
LEASE_WAIT = 1.0  # seconds a call waits for a lease before it goes ahead (failing open)
FAIL_OPEN_SECONDS = 5.0  # how long a key goes unlimited when its lease failed, before another
_UNLIMITED = 1 << 30  # the permits a key failing open holds
_MAX_KEYS = 10_000  # keys remembered per scope before expired ones are dropped

# The policies' names, as in the RateLimit-Policy and RateLimit headers and the metrics' labels.
POLICIES = ("token", "organisation")

LEASE = sql("""
    WITH lease AS (
        INSERT INTO rate_limit_windows AS w (organisation_id, scope, subject, window_start, granted)
        VALUES (:organisation_id, :scope, :subject, date_trunc('minute', now()), :block)
        ON CONFLICT (organisation_id, scope, subject, window_start) DO UPDATE
           SET granted = w.granted + :block
         WHERE w.granted < :limit
        RETURNING granted
    )
    SELECT (SELECT granted FROM lease) AS granted,
           extract(epoch FROM date_trunc('minute', now()) + interval '1 minute' - now())::float8
               AS ends_in
""")

# Counts of minutes gone by: read by nothing, kept a little for whoever looks.
FORGET_OLD_WINDOWS = sql("""
    DELETE FROM rate_limit_windows WHERE window_start < now() - interval '5 minutes'
""")


class _Bucket:
    """One key's permits in this process, for the minute ending at `ends` (monotonic time)."""

    __slots__ = (
        "organisation_id", "subject", "left", "low", "ends", "exhausted", "open", "next_block", "lease",
    )

    def __init__(self, organisation_id: UUID, subject: UUID, first_block: int) -> None:
        self.organisation_id = organisation_id
        self.subject = subject
        self.left = 0
        self.low = -1  # a lease for the next block starts when `left` comes down to this
        self.ends = 0.0
        self.exhausted = False  # the minute's count has reached the limit
        self.open = False  # granted without the database (failing open)
        self.next_block = first_block
        self.lease: asyncio.Future[None] | None = None  # the lease in flight, if any


class _Scope:
    __slots__ = ("name", "limit", "max_block", "first_block", "buckets", "refused")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.max_block = max(1, min(MAX_BLOCK, limit // 50))
        self.first_block = max(1, self.max_block // FIRST_BLOCK_SHARE)
        self.buckets: dict[int, _Bucket] = {}
        self.refused = 0  # calls refused by this scope (metrics)


class RateLimiter:
    """Per-token and per-organisation limits in calls per minute; 0 turns a scope off."""

    def __init__(self, database_url: str, *, per_token: int, per_organisation: int) -> None:
        self._own = OwnConnection(database_url)
        self.token = _Scope("token", per_token)
        self.organisation = _Scope("organisation", per_organisation)
        self.scopes = tuple(s for s in (self.token, self.organisation) if s.limit > 0)
        self.policy_header = ", ".join(f'"{s.name}";q={s.limit};w={WINDOW_SECONDS}' for s in self.scopes)
        self._forgot_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self.leases = 0  # round trips made (metrics)
        self.fail_open_calls = 0  # calls admitted without the database (metrics)
        self._failing = False

    @property
    def enabled(self) -> bool:
        return bool(self.scopes)

    def admit(self, principal: Principal) -> Awaitable[None] | None:
        """Spend a permit of the caller's token and of its organisation.

        None: admitted. An awaitable: a lease is needed first; await it and ask again. Raises
        TooManyRequests when either has used its minute's limit.
        """
        now = time.monotonic()
        token = org = None
        if self.token.limit:
            token = self.token.buckets.get(principal.token_id.int)
            if token is None or token.left <= 0 or now >= token.ends:
                return self._slow(principal, now)
        if self.organisation.limit:
            org = self.organisation.buckets.get(principal.organisation_id.int)
            if org is None or org.left <= 0 or now >= org.ends:
                return self._slow(principal, now)
        # The common case: both at hand.
        if token is not None:
            token.left -= 1
            if token.left <= token.low and token.lease is None:
                self._lease(self.token, token)
            if token.open:
                self.fail_open_calls += 1
        if org is not None:
            org.left -= 1
            if org.left <= org.low and org.lease is None:
                self._lease(self.organisation, org)
            if org.open and (token is None or not token.open):
                self.fail_open_calls += 1
        return None

    def _slow(self, principal: Principal, now: float) -> Awaitable[None] | None:
        """A key without permits at hand: refused, or a lease to wait for."""
        found: list[tuple[_Scope, _Bucket]] = []
        for scope, key, subject in (
            (self.token, principal.token_id.int, principal.token_id),
            (self.organisation, principal.organisation_id.int, principal.organisation_id),
        ):
            if not scope.limit:
                continue
            bucket = scope.buckets.get(key)
            if bucket is None:
                if len(scope.buckets) >= _MAX_KEYS:
                    _forget_expired(scope.buckets, now)
                bucket = scope.buckets[key] = _Bucket(principal.organisation_id, subject, scope.first_block)
            if now >= bucket.ends and bucket.open:
                # Still failing open: calls go on unlimited while a lease is tried again.
                bucket.ends = now + FAIL_OPEN_SECONDS
                self._lease(scope, bucket)
            elif now >= bucket.ends and bucket.lease is None:  # a new minute
                bucket.left, bucket.low, bucket.exhausted = 0, -1, False
                bucket.next_block = scope.first_block
            found.append((scope, bucket))
        for scope, bucket in found:
            if bucket.exhausted and now < bucket.ends and bucket.left <= 0:
                scope.refused += 1
                retry_after = max(1, math.ceil(bucket.ends - now))
                raise TooManyRequests(
                    f"Too many requests: this {scope.name}'s limit of {scope.limit} calls a minute "
                    f"is used up; try again in {retry_after} s",
                    data={"retryAfter": retry_after, "policy": scope.name},
                )
        # A key with nothing to spend now: none left, or its minute over while a lease is still
        # in flight (which lands with the new minute's end).
        empty = [(scope, bucket) for scope, bucket in found if bucket.left <= 0 or now >= bucket.ends]
        if empty:
            return self._wait(empty, principal)
        return self.admit(principal)  # both at hand now (a lease landed at a new minute)

    async def _wait(self, empty: list[tuple[_Scope, _Bucket]], principal: Principal) -> None:
        """Wait for the keys' leases, then spend as admit() does (refused, or waiting again)."""
        leases = [asyncio.shield(self._lease(scope, bucket)) for scope, bucket in empty]
        try:
            await asyncio.wait_for(asyncio.gather(*leases), LEASE_WAIT)
        except TimeoutError:
            # The database is slow to answer: this call goes ahead, and the keys fail open
            # until their leases land, so no other call waits as long.
            now = time.monotonic()
            for _, bucket in empty:
                if bucket.left <= 0 or now >= bucket.ends:
                    self._fail_open(bucket, TimeoutError())
            self.fail_open_calls += 1
            return
        waiting = self.admit(principal)
        if waiting is not None:
            await waiting

    def _lease(self, scope: _Scope, bucket: _Bucket) -> asyncio.Future[None]:
        """The bucket's lease in flight, started if none is."""
        if bucket.lease is None:
            bucket.lease = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._run_lease(scope, bucket, bucket.lease))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return bucket.lease

    async def _run_lease(self, scope: _Scope, bucket: _Bucket, done: asyncio.Future[None]) -> None:
        block = bucket.next_block
        try:
            granted, ends_in = await self._ask(scope, bucket, block)
        except Exception as exc:  # whatever it is, calls go ahead: failing open is the answer
            self._fail_open(bucket, exc)
        else:
            now = time.monotonic()
            ends = now + ends_in
            if bucket.open or ends > bucket.ends + WINDOW_SECONDS / 2:
                # A later minute than the permits in hand (or those were granted failing open):
                # they are not this minute's to spend.
                bucket.left, bucket.exhausted, bucket.open = 0, False, False
            bucket.ends = ends
            if granted is None:
                bucket.exhausted, bucket.low = True, -1
            else:
                bucket.left += block
                bucket.low = block // 2
                bucket.next_block = min(scope.max_block, block * 2)
            if self._failing:
                self._failing = False
                log.warning("rate limits: the database answers again; limits apply")
        finally:
            bucket.lease = None
            done.set_result(None)

    def _fail_open(self, bucket: _Bucket, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "rate limits: cannot lease permits (%s); calls go ahead unlimited until the "
                "database answers", type(exc).__name__,
            )
        bucket.left, bucket.low = _UNLIMITED, -1
        bucket.ends = time.monotonic() + FAIL_OPEN_SECONDS
        bucket.exhausted, bucket.open = False, True

    async def _ask(self, scope: _Scope, bucket: _Bucket, block: int) -> tuple[int | None, float]:
        """One round trip on the limiter's own connection: (the count, or None when at the
        limit; seconds left in the minute)."""
        params = {
            "organisation_id": bucket.organisation_id, "scope": scope.name,
            "subject": bucket.subject, "block": block, "limit": scope.limit,
        }
        row = await self._own.fetchone(LEASE.query, params)
        self.leases += 1
        if time.monotonic() - self._forgot_at > WINDOW_SECONDS:
            self._forgot_at = time.monotonic()
            await self._own.fetchone(FORGET_OLD_WINDOWS.query)
        assert row is not None
        return row[0], float(row[1])

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._own.close()


def _forget_expired(buckets: dict[int, _Bucket], now: float) -> None:
    for key in [k for k, b in buckets.items() if b.ends <= now and b.lease is None]:
        del buckets[key]

"""Prometheus metrics, correct across `serve --workers N`, at about a microsecond per call.

Each server process keeps its numbers in one flat array of doubles: per procedure, calls and
seconds by outcome code and a duration histogram; per process, pool, auth-cache and shedding
figures. Under `serve`, the array is a file of its own in NURTUREHUB_METRICS_DIR (a folder
`serve` makes afresh and removes when it stops), mapped into memory, so a call's update is a
store to memory and the process answering a scrape adds up every process's file. Counters of a
process that has gone stay counted; its gauges drop out. Without the folder (tests, one process
run by hand) the array is the process's own memory.

Why not prometheus_client's multiprocess mode: about 2 us per update, twice its single-process
cost, dead workers' files that pile up, and collectors that are not aggregated (see the research
notes, issue 20). Labels come from closed sets only: procedure names from the router, outcome
codes from server/errors.py, status and provider names the collectors take from the schema.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from server.db import Tx
from server.errors import RPCError

__all__ = ["BOUNDS", "Gauge", "Metrics", "ScrapeCollector", "authorised"]

# Seconds; OpenTelemetry's RPC duration buckets, 5 ms to 10 s, with 1 and 2.5 ms below them.
BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _codes() -> tuple[str, ...]:
    """OK and every error class's code (read when the app is built, all modules imported)."""
    found, stack = {"OK", RPCError.code}, list(RPCError.__subclasses__())
    while stack:
        cls = stack.pop()
        found.add(cls.code)
        stack.extend(cls.__subclasses__())
    return tuple(sorted(found))


_OTHER_METHOD = "other"  # a name the router does not have (METHOD_NOT_FOUND and the like)

# Per process: (name, kind, help). Gauges are summed over live processes only. A name may carry
# labels from a closed set; an entry without help is another label set of the family above it.
PROCESS = (
    ("nurturehub_db_pool_connections_in_use", "gauge", "Database connections checked out."),
    ("nurturehub_db_pool_connections_idle", "gauge", "Open database connections not in use."),
    ("nurturehub_db_pool_waiting", "gauge", "Calls waiting for a database connection now."),
    ("nurturehub_db_pool_waits_total", "counter", "Calls that had to wait for a connection."),
    ("nurturehub_db_pool_wait_seconds_total", "counter", "Seconds calls spent waiting for a connection."),
    ("nurturehub_db_pool_timeouts_total", "counter", "Calls refused: no connection was free in time."),
    ("nurturehub_auth_cache_hits_total", "counter", "Tokens resolved from the process's cache."),
    ("nurturehub_auth_cache_misses_total", "counter", "Tokens looked up in the database."),
    ("nurturehub_auth_listener_up", "gauge", "Processes hearing token revocations (cache in use)."),
    ("nurturehub_shed_total", "counter", "Calls refused at once: their organisation was over its "
     "share of a busy pool."),
    ('nurturehub_rate_limited_total{scope="token"}', "counter", "Calls refused by a rate limit, by "
     "the limit's scope (token, organisation)."),
    ('nurturehub_rate_limited_total{scope="organisation"}', "counter", ""),
    ("nurturehub_rate_limit_fail_open_total", "counter", "Calls admitted without a rate limit "
     "check: the database could not be reached (the limiter fails open)."),
    ("nurturehub_rate_limit_leases_total", "counter", "Rate limit permits leased from the "
     "database: one round trip per block of calls."),
    ("nurturehub_processes", "gauge", "Server processes reporting."),
)
_PROCESS_INDEX = {name: index for index, (name, _, _) in enumerate(PROCESS)}

_NB = len(BOUNDS) + 1
_HEADER = 1  # the layout's fingerprint, so a file of another build is never misread


@dataclass(frozen=True)
class Gauge:
    """A gauge measured at scrape time (from the database, say): one value per label set."""

    name: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


ScrapeCollector = Callable[[Tx], Awaitable[Sequence[Gauge]]]


def authorised(expected: str, authorization: str | None) -> bool:
    """Whether the header carries `Bearer <expected>`, compared in constant time."""
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), expected.encode())


class Metrics:
    def __init__(self, methods: Iterable[str], directory: Path | None = None) -> None:
        self.methods = (*sorted(set(methods)), _OTHER_METHOD)
        codes = _codes()
        self._nc = nc = len(codes)
        # Per procedure: calls by code, seconds by code, histogram buckets, the histogram's sum.
        block = 2 * nc + _NB + 1
        self._bases = {name: _HEADER + len(PROCESS) + i * block for i, name in enumerate(self.methods)}
        self._other = self._bases[_OTHER_METHOD]
        self._codes = {code: i for i, code in enumerate(codes)}
        self._internal = self._codes[RPCError.code]
        self._size = _HEADER + len(PROCESS) + len(self.methods) * block
        layout = repr((self.methods, codes, BOUNDS, PROCESS)).encode()
        self._fingerprint = float(zlib.crc32(layout))
        self.directory = directory
        # Mapped for the life of the process: a call still finishing during shutdown may write.
        self._mapping: mmap.mmap | None = None
        if directory is None:
            self.values = memoryview(bytearray(self._size * 8)).cast("d")
        else:
            path = directory / f"{os.getpid()}.metrics"
            with path.open("w+b") as file:
                file.truncate(self._size * 8)
                self._mapping = mmap.mmap(file.fileno(), self._size * 8)
            self.values = memoryview(self._mapping).cast("d")
        self.values[0] = self._fingerprint

    def observe(self, method: str, code: str, seconds: float) -> None:
        """One call answered: the hot path, a few dictionary look-ups and stores."""
        values, nc = self.values, self._nc
        base = self._bases.get(method, self._other)
        code_index = self._codes.get(code, self._internal)
        values[base + code_index] += 1
        values[base + nc + code_index] += seconds
        histogram = base + 2 * nc
        values[histogram + bisect_left(BOUNDS, seconds)] += 1
        values[histogram + _NB] += seconds

    def set(self, name: str, value: float) -> None:
        """A per-process figure (see PROCESS), written by the sampler."""
        self.values[_HEADER + _PROCESS_INDEX[name]] = value

    # Scraping ----------------------------------------------------------------------------------

    def _gather(self) -> tuple[array[float], array[float]]:
        """Every process's values summed; and the gauges of live processes only."""
        totals = array("d", bytes(self._size * 8))
        live = array("d", bytes(len(PROCESS) * 8))
        sources: list[tuple[int, bytes]] = []
        if self.directory is None:
            sources.append((os.getpid(), self.values.tobytes()))
        else:
            for path in self.directory.glob("*.metrics"):
                with contextlib.suppress(OSError, ValueError):
                    sources.append((int(path.stem), path.read_bytes()))
        for pid, raw in sources:
            values = array("d")
            values.frombytes(raw[: len(raw) // 8 * 8])
            if len(values) != self._size or values[0] != self._fingerprint:
                continue  # a file of another build, or half written
            for i in range(1, self._size):
                totals[i] += values[i]
            if _alive(pid):
                for i in range(len(PROCESS)):
                    live[i] += values[_HEADER + i]
        return totals, live

    def render(self, scraped: Sequence[Gauge] = ()) -> bytes:
        totals, live = self._gather()
        nc = self._nc
        lines: list[str] = []
        calls, seconds, histogram = [], [], []
        for method in self.methods:
            base = self._bases[method]
            for code, i in self._codes.items():
                if totals[base + i]:
                    labels = f'method="{method}",code="{code}"'
                    calls.append(f"nurturehub_rpc_calls_total{{{labels}}} {_number(totals[base + i])}")
                    seconds.append(f"nurturehub_rpc_call_seconds_total{{{labels}}} {totals[base + nc + i]!r}")
            first = base + 2 * nc
            counts = totals[first : first + _NB]
            if not sum(counts):
                continue
            name, running = "nurturehub_rpc_call_duration_seconds", 0.0
            for bound, count in zip((*BOUNDS, "+Inf"), counts, strict=True):
                running += count
                histogram.append(f'{name}_bucket{{method="{method}",le="{bound}"}} {_number(running)}')
            histogram.append(f'{name}_sum{{method="{method}"}} {totals[first + _NB]!r}')
            histogram.append(f'{name}_count{{method="{method}"}} {_number(running)}')
        _family(lines, "nurturehub_rpc_calls_total", "counter",
                "JSON-RPC calls answered, by procedure and outcome.", calls)
        _family(lines, "nurturehub_rpc_call_seconds_total", "counter",
                "Seconds spent answering calls, by procedure and outcome.", seconds)
        _family(lines, "nurturehub_rpc_call_duration_seconds", "histogram",
                "Time to answer a call, by procedure.", histogram)
        for i, (name, kind, help_text) in enumerate(PROCESS):
            value = live[i] if kind == "gauge" else totals[_HEADER + i]
            sample = f"{name} {_number(value)}"
            if help_text:
                _family(lines, name.partition("{")[0], kind, help_text, [sample])
            else:  # another label set of the family above
                lines.append(sample)
        for gauge in scraped:
            samples = [f"{gauge.name}{_labels(labels)} {_number(value)}" for labels, value in gauge.samples]
            _family(lines, gauge.name, "gauge", gauge.help, samples)
        return ("\n".join(lines) + "\n").encode()


def _family(lines: list[str], name: str, kind: str, help_text: str, samples: list[str]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (f'{key}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
               for key, value in labels.items())
    return "{" + ",".join(escaped) + "}"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

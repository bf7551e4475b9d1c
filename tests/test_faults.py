"""Issue 20, point 8: slow and oversized requests, the probes, and fair shedding under overload."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from server.http import CoalescingHttpToolsProtocol
from tests.probe import probe_router
from tests.support import Rpc, ServerThread


def _connect(server: ServerThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def short_read_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(CoalescingHttpToolsProtocol, "READ_TIMEOUT", 1.0)
    return 1.0


def test_a_request_header_over_the_limit_is_refused_with_431(server: ServerThread) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_headers_trickling_in_are_cut_off_at_the_read_timeout(
    server: ServerThread, short_read_timeout: float
) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        for _ in range(5):  # a byte a second for longer than the timeout
            try:
                sock.sendall(b"X")
            except OSError:
                break
            time.sleep(0.5)
        sock.settimeout(5)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert time.monotonic() - started < 4


def test_two_hundred_trickling_connections_are_all_closed_and_others_are_served(
    server: ServerThread, short_read_timeout: float
) -> None:
    socks = [_connect(server) for _ in range(200)]
    try:
        for sock in socks:
            sock.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert httpx.get(server.url + "/livez", timeout=5).status_code == 200
        time.sleep(0.5)
        for sock in socks:
            try:
                sock.sendall(b"a")
            except OSError:
                pass
        started = time.monotonic()
        for sock in socks:
            sock.settimeout(max(0.1, 4 - (time.monotonic() - started)))
            assert _read_all(sock).startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in socks:
            sock.close()


def test_a_connection_that_sends_nothing_is_closed_at_the_read_timeout(
    server: ServerThread, short_read_timeout: float
) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        assert _read_all(sock).startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 3


def test_half_a_body_is_cut_off_and_runs_nothing(server: ServerThread, short_read_timeout: float) -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "auth.whoami"}'
    with _connect(server) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        sock.settimeout(5)
        answer = _read_all(sock)
    assert time.monotonic() - started < 3
    assert b'"result"' not in answer and b'"error"' not in answer


def test_a_whole_request_is_answered_as_before(server: ServerThread, short_read_timeout: float) -> None:
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/livez").json() == {"status": "ok"}
        time.sleep(0.2)
        assert client.get("/readyz").json() == {"status": "ready", "database": "ok"}
        assert client.get("/healthz").status_code == 200


# Fair shedding ---------------------------------------------------------------------------------


@pytest.fixture
def small_pool_server(database_url: str) -> Iterator[ServerThread]:
    thread = ServerThread(database_url, probe_router, pool_size=4, shed_after=0.2)
    yield thread
    thread.stop()


def _timed_call(url: str, token: str, seconds: float, out: list[tuple[float, int, Any, float]]) -> None:
    """Appends (seconds taken, HTTP status, Retry-After, when it ended)."""
    started = time.monotonic()
    response = httpx.post(
        url + "/rpc",
        headers={"Authorization": f"Bearer {token}"},
        json={"jsonrpc": "2.0", "id": 1, "method": "probe.sleepAsMember", "params": {"seconds": seconds}},
        timeout=30,
    )
    ended = time.monotonic()
    out.append((ended - started, response.status_code, response.headers.get("retry-after"), ended))


def test_one_organisations_flood_is_shed_early_and_does_not_queue_ahead_of_another(
    small_pool_server: ServerThread, world: Any
) -> None:
    flooder, other = world.org("Flooding Agency"), world.org("Quiet Agency")
    url = small_pool_server.url
    # The quiet agency has called before, so its token is cached: this is about the queue. (An
    # uncached token's look-up is served first too, but the call after it queues afresh and can
    # wait one more turn of the pool: see the closing note of issue 20.)
    assert Rpc(url, other.member_token).call("auth.whoami")["organisation"]["id"] == other.id
    flood: list[tuple[float, int, Any, float]] = []
    threads = [
        threading.Thread(target=_timed_call, args=(url, flooder.member_token, 1.0, flood)) for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.7)  # the pool of 4 is taken, six of the flood have queued for a while
    late: list[tuple[float, int, Any, float]] = []
    _timed_call(url, flooder.member_token, 1.0, late)
    quiet: list[tuple[float, int, Any, float]] = []
    _timed_call(url, other.member_token, 0.0, quiet)
    for thread in threads:
        thread.join()

    # The flood's late call is refused at once, with Retry-After, not after the pool's 2 s wait.
    (seconds, status, retry_after, _) = late[0]
    # (1 s leaves room for a loaded machine; the pool's own wait would be 2 s.)
    assert status == 503 and retry_after == "1" and seconds < 1.0, late
    # The quiet agency waits only for the first connections to come back, ahead of the six flood
    # calls queued before it: it is answered before any of them is.
    (_, status, _, quiet_ended) = quiet[0]
    ends = sorted(ended for _, _, _, ended in flood)
    assert status == 200 and quiet_ended < ends[4], (quiet, sorted(flood))
    assert [status for _, status, _, _ in flood].count(200) >= 4


def test_calls_within_their_share_are_never_shed(small_pool_server: ServerThread, world: Any) -> None:
    org = world.org()
    rpc = Rpc(small_pool_server.url, org.member_token)
    call = {"jsonrpc": "2.0", "method": "probe.sleepAsMember", "params": {"seconds": 0.05}}
    replies = rpc.post([{**call, "id": i} for i in range(2)]).json()
    assert [reply.get("result") for reply in replies] == [{"ok": True}, {"ok": True}]


# The embedded PostgreSQL killed under `serve` ----------------------------------------------


def test_serve_restarts_the_embedded_postgresql_when_it_is_killed(tmp_path: Any) -> None:
    import os
    import re
    import signal

    from tests.support import wait_until
    from tests.test_serve import Serve, providers

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["NURTUREHUB_DATA_DIR"] = str(tmp_path / "data")
    server = Serve(env)
    try:
        found = re.search(r"^\s+(nh_[0-9A-Za-z]{38})$", server.text(), re.MULTILINE)
        assert found, server.text()
        token = found.group(1)
        assert len(providers(server.url, token)) == 5
        pid_file = tmp_path / "data" / "postgres" / "postmaster.pid"
        postmaster = int(pid_file.read_text().splitlines()[0])
        os.kill(postmaster, signal.SIGKILL)

        def serving_again() -> bool:
            try:
                ready = httpx.get(server.url + "/readyz", timeout=2).status_code == 200
                return ready and len(providers(server.url, token)) == 5
            except (httpx.HTTPError, KeyError):
                return False

        assert wait_until(serving_again, timeout=40, interval=0.5), server.text()
        assert "restarting it" in server.text()
        assert httpx.get(server.url + "/livez").status_code == 200
    finally:
        assert server.stop() == 0


def test_serve_stops_within_its_deadline_though_a_client_sent_half_a_body(postgres: Any) -> None:
    import os

    from tests.test_serve import Serve

    url = postgres.create_database()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "NURTUREHUB_REQUEST_READ_TIMEOUT": "60",  # so the shutdown deadline is what ends it
        "NURTUREHUB_SHUTDOWN_TIMEOUT": "2",
    }
    server = Serve(env)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"jsonrpc\":"
        )
        time.sleep(0.5)
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 10

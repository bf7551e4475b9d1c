"""The HTTP surface around /rpc: probes, CORS, a busy pool, failures and the per-call log line."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from procedures import app_router
from tests.support import Rpc, ServerThread, query


def test_healthz_and_readyz(rpc: Rpc) -> None:
    assert rpc.http.get("/healthz").json() == {"status": "ok"}
    ready = rpc.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"


def test_readyz_reports_an_unreachable_database() -> None:
    server = ServerThread("postgresql://nobody@127.0.0.1:1/nowhere", app_router)
    try:
        client = Rpc(server.url)
        assert client.http.get("/healthz").status_code == 200
        ready = client.http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["database"] == "unreachable"
        error = client.error("contacts.listCrmProviders", {}, token="nh_" + "x" * 38)
        assert error["data"]["code"] == "UNAUTHORIZED"  # malformed token: refused without the database
    finally:
        server.stop()


def test_cors_allows_nothing_by_default(rpc: Rpc) -> None:
    preflight = rpc.http.options(
        "/rpc",
        headers={
            "Origin": "https://app.nurturehub.co.uk",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = rpc.http.post(
        "/rpc",
        json={"jsonrpc": "2.0", "id": 1, "method": "nope"},
        headers={"Origin": "https://app.nurturehub.co.uk"},
    )
    assert "access-control-allow-origin" not in simple.headers


def test_cors_allows_configured_origins_and_answers_preflight(database_url: str) -> None:
    server = ServerThread(database_url, app_router, cors_origins=("https://app.nurturehub.co.uk",))
    try:
        http = Rpc(server.url).http
        preflight = http.options(
            "/rpc",
            headers={
                "Origin": "https://app.nurturehub.co.uk",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.nurturehub.co.uk"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        other = http.options(
            "/rpc", headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"}
        )
        assert other.headers.get("access-control-allow-origin") != "https://evil.example.com"
        actual = http.post(
            "/rpc",
            json={"jsonrpc": "2.0", "id": 1, "method": "nope"},
            headers={"Origin": "https://app.nurturehub.co.uk"},
        )
        assert actual.headers["access-control-allow-origin"] == "https://app.nurturehub.co.uk"
    finally:
        server.stop()


def test_an_exhausted_pool_answers_quickly_with_a_clear_error(database_url: str) -> None:
    from tests.probe import probe_router

    server = ServerThread(database_url, probe_router, pool_size=1, pool_timeout=0.3)
    try:
        holder = Rpc(server.url)
        sleeper = threading.Thread(target=holder.call, args=("probe.sleep", {"seconds": 2}))
        sleeper.start()
        time.sleep(0.4)  # the one connection is now held
        started = time.monotonic()
        error = Rpc(server.url).error("probe.sleep", {"seconds": 0})
        waited = time.monotonic() - started
        sleeper.join()
        assert error["data"]["code"] == "SERVICE_UNAVAILABLE" and error["data"]["httpStatus"] == 503
        assert "busy" in error["message"]
        assert waited < 1.5
        assert Rpc(server.url).call("probe.sleep", {"seconds": 0}) == {"ok": True}
    finally:
        server.stop()


def test_callers_queue_for_a_busy_pool_and_each_is_served(fresh_database: str) -> None:
    from tests.probe import probe_router

    server = ServerThread(fresh_database, probe_router, pool_size=1, pool_timeout=5)
    try:
        results: list[object] = []

        def call() -> None:
            results.append(Rpc(server.url).call("probe.sleep", {"seconds": 0.1}))

        callers = [threading.Thread(target=call) for _ in range(6)]
        started = time.monotonic()
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        # One connection, handed from each caller to the next: six sleeps one after another.
        assert results == [{"ok": True}] * 6
        assert time.monotonic() - started >= 0.6
        assert _server_connections(fresh_database) == 1
    finally:
        server.stop()


def test_calls_recover_when_the_database_drops_every_connection(fresh_database: str) -> None:
    from tests.probe import probe_router

    server = ServerThread(fresh_database, probe_router, pool_size=3)
    try:
        warm = [
            threading.Thread(target=Rpc(server.url).call, args=("probe.sleep", {"seconds": 0.2}))
            for _ in range(3)
        ]
        for thread in warm:
            thread.start()
        for thread in warm:
            thread.join()
        assert _server_connections(fresh_database) == 3
        query(
            fresh_database,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'nurturehub' AND datname = current_database()",
        )
        # A dropped connection fails the one call that finds it, with a clear 503, and is not
        # used again: after at most one failure per pooled connection, calls succeed.
        client = Rpc(server.url)
        codes = []
        for _ in range(5):
            reply = client.post({"jsonrpc": "2.0", "id": 1, "method": "probe.transaction"}).json()
            codes.append(reply["error"]["data"]["code"] if "error" in reply else "OK")
        assert set(codes) <= {"OK", "SERVICE_UNAVAILABLE"} and codes.count("SERVICE_UNAVAILABLE") <= 3
        assert codes[-2:] == ["OK", "OK"]
    finally:
        server.stop()


def _server_connections(database_url: str) -> int:
    ((count,),) = query(
        database_url,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'nurturehub' AND datname = current_database()",
    )
    return int(count)


def test_an_unexpected_exception_is_a_generic_internal_error(probe: Rpc, caplog) -> None:
    with caplog.at_level(logging.INFO):
        response = probe.post({"jsonrpc": "2.0", "id": 1, "method": "probe.broken"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error == {
        "code": -32603,
        "message": "Internal error",
        "data": {
            "code": "INTERNAL_SERVER_ERROR",
            "httpStatus": 500,
            "path": "probe.broken",
            "requestId": response.headers["x-request-id"],
        },
    }
    formatted = _formatted(caplog)
    assert "probe.broken" in formatted
    assert "secret-detail-7f3a" not in formatted and "hunter2" not in formatted


def test_an_output_that_fails_its_model_is_an_internal_error(probe: Rpc) -> None:
    error = probe.error("probe.badOutput")
    assert error["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "not-a-bool" not in json.dumps(error)


def test_a_serialised_output_that_fails_its_model_is_caught_in_the_tests(probe: Rpc) -> None:
    # Handlers that serialise their own result (server/encoded.py) skip validation in
    # production; the test servers turn it on, so a select list that drifts fails here.
    error = probe.error("probe.badEncodedOutput")
    assert error["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "not-a-bool" not in json.dumps(error)


def _formatted(caplog) -> str:
    from server.logs import JsonFormatter

    formatter = JsonFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


def test_one_structured_log_line_per_call_without_params_or_tokens(rpc: Rpc, world, caplog) -> None:
    org = world.org()
    secret_param = "CANARY-PARAM-93b1"
    with caplog.at_level(logging.INFO, logger="nurturehub.rpc"):
        rpc.post(
            [
                {"jsonrpc": "2.0", "id": 1, "method": "auth.whoami"},
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "contacts.listCrmProviders",
                    "params": {"x": secret_param},
                },
            ],
            token=org.owner_token,
        )
    lines = [
        json.loads(line) for line in _formatted(caplog).splitlines() if '"logger":"nurturehub.rpc"' in line
    ]
    calls = [line for line in lines if line.get("msg") == "rpc"]
    # A batch's calls run side by side (issue 20), so their lines come in either order.
    assert sorted((c["procedure"], c["code"]) for c in calls[-2:]) == [
        ("auth.whoami", "OK"),
        ("contacts.listCrmProviders", "BAD_REQUEST"),
    ]
    for call in calls[-2:]:
        assert call["organisationId"] == org.id
        assert isinstance(call["durationMs"], float) and call["requestId"]
    text = _formatted(caplog)
    assert org.owner_token not in text and secret_param not in text


@pytest.mark.parametrize("path", ["/rpc"])
def test_get_on_rpc_is_not_allowed(rpc: Rpc, path: str) -> None:
    assert rpc.http.get(path).status_code == 405

"""Issue 19: what a web app needs from the HTTP layer: CORS, JSON-only browser posts, the explorer."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from procedures import app_router
from server.explorer import CSP
from tests.support import Rpc, ServerThread

APP = "https://app.nurturehub.co.uk"
CALL = '{"jsonrpc": "2.0", "id": 1, "method": "auth.whoami"}'


@pytest.fixture(scope="module")
def web(database_url: str) -> Iterator[ServerThread]:
    server = ServerThread(database_url, app_router, cors_origins=(APP,))
    yield server
    server.stop()


@pytest.fixture
def http(web: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web.url, timeout=30) as client:
        yield client


def test_preflight_is_cached_as_long_as_chromium_allows(http: httpx.Client) -> None:
    preflight = http.options(
        "/rpc",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-request-id",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-max-age"] == "7200"
    assert preflight.headers["access-control-allow-origin"] == APP
    assert "access-control-allow-credentials" not in preflight.headers  # bearer tokens, no cookies


def test_a_cross_origin_reply_lets_the_page_read_the_request_id_and_rate_limit_headers(
    http: httpx.Client,
) -> None:
    reply = http.post(
        "/rpc", content=CALL, headers={"Origin": APP, "Content-Type": "application/json; charset=utf-8"}
    )
    assert reply.status_code == 401  # it ran: no token
    assert reply.headers["access-control-allow-origin"] == APP
    exposed = {name.strip() for name in reply.headers["access-control-expose-headers"].lower().split(",")}
    assert exposed == {"x-request-id", "retry-after", "ratelimit", "ratelimit-policy"}
    assert reply.json()["error"]["data"]["requestId"] == reply.headers["x-request-id"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_a_browser_post_not_declared_as_json_is_refused_before_it_runs(
    http: httpx.Client, content_type: str | None
) -> None:
    """A form or text/plain post needs no preflight, so a hostile page could send one; it must
    run nothing, whichever origin it comes from."""
    headers = {"Origin": "https://evil.example.com", "X-Request-Id": "csrf-probe-1"}
    if content_type:
        headers["Content-Type"] = content_type
    reply = http.post("/rpc", content=CALL, headers=headers)
    assert reply.status_code == 415
    error = reply.json()["error"]
    assert error["code"] == -32015 and error["data"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert "application/json" in error["message"]
    assert error["data"]["requestId"] == reply.headers["x-request-id"] == "csrf-probe-1"


def test_a_script_without_an_origin_keeps_the_fast_path(rpc: Rpc) -> None:
    """No Origin: no browser, so nothing to defend; the content type is not looked at."""
    reply = rpc.http.post("/rpc", content=CALL, headers={"Content-Type": "text/plain"})
    assert reply.status_code == 401 and reply.json()["error"]["data"]["code"] == "UNAUTHORIZED"


def test_the_explorer_is_one_small_self_contained_page(http: httpx.Client) -> None:
    page = http.get("/explorer")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP
    assert "default-src 'none'" in CSP and "connect-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
    assert page.headers["cache-control"] == "no-store"
    total = len(page.content)
    for asset in ("/explorer/explorer.js", "/explorer/explorer.css"):
        assert asset in page.text
        reply = http.get(asset)
        assert reply.status_code == 200 and reply.headers["content-security-policy"] == CSP
        total += len(reply.content)
        assert "http://" not in reply.text and "https://" not in reply.text  # no third-party host
        assert "localStorage" not in reply.text and "sessionStorage" not in reply.text
    assert "http://" not in page.text and "https://" not in page.text
    assert total <= 40 * 1024, total


def test_the_explorer_can_be_switched_off(database_url: str) -> None:
    server = ServerThread(database_url, app_router, explorer=False)
    try:
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/explorer").status_code == 404
            assert http.get("/explorer/explorer.js").status_code == 404
            assert http.get("/openrpc.json").status_code == 200
    finally:
        server.stop()

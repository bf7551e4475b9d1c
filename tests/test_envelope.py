"""The JSON-RPC 2.0 envelope over real HTTP: the spec's section 7 examples, adapted, and limits."""

from __future__ import annotations

import pytest

from tests.support import Rpc, ServerThread


def whoami(id_: object = 1) -> dict[str, object]:
    return {"jsonrpc": "2.0", "method": "auth.whoami", "params": {}, "id": id_}


def test_call_with_named_params_returns_result(rpc: Rpc, world) -> None:
    org = world.org()
    response = rpc.post(whoami(7), token=org.owner_token)
    assert response.status_code == 200
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == 7
    assert body["result"]["organisation"]["id"] == org.id
    assert body["result"]["role"] == "owner"


def test_params_may_be_omitted(rpc: Rpc, world) -> None:
    org = world.org()
    body = rpc.post({"jsonrpc": "2.0", "method": "auth.whoami", "id": "a"}, token=org.owner_token).json()
    assert body["id"] == "a" and body["result"]["role"] == "owner"


def test_unknown_method_is_method_not_found(rpc: Rpc) -> None:
    response = rpc.post({"jsonrpc": "2.0", "method": "foobar", "id": "1"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == -32601
    assert error["data"]["code"] == "METHOD_NOT_FOUND"
    assert error["data"]["path"] == "foobar"
    assert error["data"]["httpStatus"] == 404
    assert response.headers["x-request-id"] == error["data"]["requestId"]


def test_invalid_json_is_parse_error(rpc: Rpc) -> None:
    response = rpc.raw('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    assert response.status_code == 400
    body = response.json()
    assert body["id"] is None
    assert body["error"]["code"] == -32700
    assert body["error"]["data"]["code"] == "PARSE_ERROR"


def test_invalid_request_object(rpc: Rpc) -> None:
    response = rpc.post({"jsonrpc": "2.0", "method": 1, "params": "bar"})
    assert response.status_code == 400
    body = response.json()
    assert body["id"] is None
    assert body["error"]["code"] == -32600


def test_batch_with_invalid_json_is_one_parse_error(rpc: Rpc) -> None:
    response = rpc.raw(
        '[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},{"jsonrpc": "2.0", "method"]'
    )
    body = response.json()
    assert isinstance(body, dict)
    assert body["error"]["code"] == -32700


def test_empty_batch_is_one_invalid_request(rpc: Rpc) -> None:
    response = rpc.raw("[]")
    assert response.status_code == 400
    body = response.json()
    assert isinstance(body, dict)
    assert body["error"]["code"] == -32600 and body["id"] is None


def test_batch_of_one_non_object_answers_one_error(rpc: Rpc) -> None:
    body = rpc.raw("[1]").json()
    assert isinstance(body, list) and len(body) == 1
    assert body[0]["error"]["code"] == -32600 and body[0]["id"] is None


def test_batch_of_three_non_objects_answers_three_errors(rpc: Rpc) -> None:
    body = rpc.raw("[1,2,3]").json()
    assert [item["error"]["code"] for item in body] == [-32600, -32600, -32600]
    assert all(item["id"] is None for item in body)


def test_mixed_batch_answers_each_element(rpc: Rpc, world) -> None:
    org = world.org()
    batch = [
        whoami("1"),
        {"jsonrpc": "2.0", "method": "auth.whoami", "params": {}},  # notification: no reply
        {"jsonrpc": "2.0", "method": "contacts.listCrmProviders", "params": {"bogus": 1}, "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        whoami("9"),
    ]
    response = rpc.post(batch, token=org.owner_token)
    assert response.status_code == 207
    by_id = {item["id"]: item for item in response.json()}
    assert len(response.json()) == 5
    assert by_id["1"]["result"]["role"] == "owner"
    assert by_id["9"]["result"]["role"] == "owner"
    assert by_id["2"]["error"]["code"] == -32602
    assert by_id["2"]["error"]["data"]["issues"][0]["path"] == "bogus"
    assert by_id["5"]["error"]["code"] == -32601
    assert by_id[None]["error"]["code"] == -32600


def test_batch_all_succeeded_is_200(rpc: Rpc, world) -> None:
    org = world.org()
    response = rpc.post([whoami(1), whoami(2)], token=org.owner_token)
    assert response.status_code == 200
    assert sorted(item["id"] for item in response.json()) == [1, 2]


def test_all_notification_batch_gets_204_and_no_body(rpc: Rpc, world) -> None:
    org = world.org()
    notes = [{"jsonrpc": "2.0", "method": "auth.whoami"}, {"jsonrpc": "2.0", "method": "nope"}]
    response = rpc.post(notes, token=org.owner_token)
    assert response.status_code == 204
    assert response.content == b""


def test_single_notification_gets_204(rpc: Rpc) -> None:
    response = rpc.post({"jsonrpc": "2.0", "method": "auth.whoami"})
    assert response.status_code == 204 and response.content == b""


@pytest.mark.parametrize("bad_id", ["true", "false", "1.5", "[1]", '{"a": 1}'])
def test_bool_and_non_scalar_ids_are_invalid_requests(rpc: Rpc, bad_id: str) -> None:
    body = rpc.raw(f'{{"jsonrpc": "2.0", "method": "auth.whoami", "id": {bad_id}}}').json()
    assert body["error"]["code"] == -32600
    assert body["id"] is None


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_ids_are_refused(rpc: Rpc, literal: str) -> None:
    body = rpc.raw(f'{{"jsonrpc": "2.0", "method": "auth.whoami", "id": {literal}}}').json()
    assert body["error"]["code"] == -32700
    assert body["id"] is None


@pytest.mark.parametrize("version", [None, "1.0", 2.0, "2"])
def test_wrong_jsonrpc_version_is_invalid_request(rpc: Rpc, version: object) -> None:
    call: dict[str, object] = {"method": "auth.whoami", "id": 3}
    if version is not None:
        call["jsonrpc"] = version
    body = rpc.post(call).json()
    assert body["error"]["code"] == -32600 and body["id"] == 3


def test_positional_params_are_invalid_params(rpc: Rpc, world) -> None:
    org = world.org()
    body = rpc.post(
        {"jsonrpc": "2.0", "method": "auth.whoami", "params": [1], "id": 1}, token=org.owner_token
    ).json()
    assert body["error"]["code"] == -32602
    assert body["error"]["data"]["issues"][0]["path"] == "params"


def test_batch_longer_than_the_limit_is_refused(rpc: Rpc) -> None:
    response = rpc.post([whoami(i) for i in range(51)])
    assert response.status_code == 413
    body = response.json()
    assert body["error"]["code"] == -32013
    assert body["error"]["data"]["code"] == "PAYLOAD_TOO_LARGE"


def test_batch_at_the_limit_is_answered(rpc: Rpc, world) -> None:
    org = world.org()
    response = rpc.post([whoami(i) for i in range(50)], token=org.owner_token)
    assert response.status_code == 200 and len(response.json()) == 50


def test_body_over_the_limit_is_refused_with_413(rpc: Rpc) -> None:
    padding = "x" * (1024 * 1024 + 10)
    response = rpc.post({"jsonrpc": "2.0", "method": "auth.whoami", "id": 1, "params": {"p": padding}})
    assert response.status_code == 413
    assert response.json()["error"]["data"]["code"] == "PAYLOAD_TOO_LARGE"


def test_streamed_body_without_length_over_the_limit_is_refused(rpc: Rpc) -> None:
    def chunks():
        yield b'{"jsonrpc": "2.0", "method": "auth.whoami", "id": 1, "params": {"p": "'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"}}'

    response = rpc.http.post("/rpc", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == -32013


def test_limits_are_configurable(database_url: str) -> None:
    from procedures import app_router

    server = ServerThread(database_url, app_router, max_batch_length=2, max_body_bytes=200)
    try:
        client = Rpc(server.url)
        assert client.post([whoami(1), whoami(2), whoami(3)]).status_code == 413
        assert (
            client.raw("[" + ",".join(['{"jsonrpc":"2.0","method":"a","id":1}'] * 6) + "]").status_code == 413
        )
        assert client.post([whoami(1), whoami(2)]).status_code == 401
    finally:
        server.stop()


def test_always_200_setting_for_strict_clients(database_url: str) -> None:
    from procedures import app_router

    server = ServerThread(database_url, app_router, always_http_200=True)
    try:
        response = Rpc(server.url).post({"jsonrpc": "2.0", "method": "nope", "id": 1})
        assert response.status_code == 200
        assert response.json()["error"]["code"] == -32601
    finally:
        server.stop()


def test_callers_request_id_is_kept_when_plain(rpc: Rpc) -> None:
    response = rpc.http.post(
        "/rpc", json={"jsonrpc": "2.0", "method": "nope", "id": 1}, headers={"X-Request-Id": "web-123.abc"}
    )
    assert response.headers["x-request-id"] == "web-123.abc"
    assert response.json()["error"]["data"]["requestId"] == "web-123.abc"
    odd = rpc.http.post(
        "/rpc", json={"jsonrpc": "2.0", "method": "nope", "id": 1}, headers={"X-Request-Id": "<script>"}
    )
    assert odd.headers["x-request-id"] != "<script>"


# Issue 20: params nested a thousand levels deep answered -32603 with HTTP 500.


def nested(depth: int, kind: str) -> str:
    """A JSON value `depth` containers deep, written by hand: json.dumps recurses too."""
    opener, closer = ('{"a":', "}") if kind == "object" else ("[", "]")
    return opener * depth + '"x"' + closer * depth


def call_body(method: str, params: str, id_: int = 1) -> str:
    return f'{{"jsonrpc":"2.0","id":{id_},"method":"{method}","params":{params}}}'


# (method, params around the deep value, the field the error names while orjson can read it)
DEEP_PARAMS = [
    ("contacts.get", '{{"id":{}}}', "id"),
    ("contacts.list", '{{"category":{}}}', "category"),
    ("contacts.create", '{{"importSource":"crm_sync","crmPayload":{{"a":{}}}}}', "crmPayload"),
    ("contacts.create", "{}", None),  # params themselves nested deep
    ("crm.connect", '{{"provider":"agentos","credentials":{{"apiKey":{}}}}}', "credentials"),
]


@pytest.mark.parametrize("depth", [254, 300, 1000, 1030, 5000])
@pytest.mark.parametrize("kind", ["object", "array"])
@pytest.mark.parametrize("method, template, field", DEEP_PARAMS)
def test_deeply_nested_params_are_invalid_params(
    rpc: Rpc, world, method: str, template: str, field: str | None, kind: str, depth: int
) -> None:
    org = world.org()
    response = rpc.raw(call_body(method, template.format(nested(depth, kind))), org.admin_token)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == -32602, error
    if depth > 1024:  # past what orjson reads: the field cannot be found
        field = "params"
    elif field is None:  # the params are the deep value: an object's key, or not an object
        field = "a" if kind == "object" else "params"
    assert [issue["path"] for issue in error["data"]["issues"]] == [field], error
    assert "Value error" not in error["message"] and "recursion" not in error["message"]


def test_deeply_nested_params_in_a_batch_are_answered_one_by_one(rpc: Rpc, world) -> None:
    org = world.org()
    deep = call_body("contacts.get", '{{"id":{}}}'.format(nested(1000, "object")), 2)
    body = "[" + ",".join([json_whoami(1), deep, json_whoami(3)]) + "]"
    response = rpc.raw(body, org.member_token)
    assert response.status_code == 207
    by_id = {item["id"]: item for item in response.json()}
    assert by_id[2]["error"]["code"] == -32602
    assert by_id[1]["result"]["role"] == by_id[3]["result"]["role"] == "member"


def json_whoami(id_: int) -> str:
    return f'{{"jsonrpc":"2.0","method":"auth.whoami","params":{{}},"id":{id_}}}'

"""Issue 5: the generated client (nurturehub_client) against the real server on a real port."""

from __future__ import annotations

import asyncio
import inspect
import types
import typing
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import nurturehub_client as nh
import pydantic
import pytest
from nurturehub_client import NOT_GIVEN, AsyncClient, Client

from procedures import app_router
from server import errors as server_errors
from server.procedure import Guard, Kind
from tests.support import Org, ServerThread, World, free_port

NEEDS_CONTACTS = pytest.mark.skipif(
    not {"contacts.create", "contacts.list", "contacts.delete"} <= set(app_router),
    reason="contacts.* is not in the registry yet",
)


class Counting(httpx.BaseTransport):
    """Real HTTP, counting requests; the first `failures` attempts fail to connect."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts = 0
        self._real = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise httpx.ConnectError("connection refused", request=request)
        return self._real.handle_request(request)


@pytest.fixture(scope="module")
def org(world: World) -> Org:
    return world.org("Client Agency")


@pytest.fixture
def client(server: ServerThread, org: Org) -> Iterator[Client]:
    with Client(server.url, token=org.member_token) as c:
        yield c


def counted(url: str, token: str, failures: int = 0, **options: Any) -> tuple[Client, Counting]:
    transport = Counting(failures)
    http = httpx.Client(transport=transport)
    return Client(url, token=token, http_client=http, backoff=0.01, **options), transport


def namespace_of(root: Any, wire: str) -> tuple[Any, str]:
    *path, name = wire.split(".")
    node = root
    for part in path:
        node = getattr(node, part)
    from clients.generator import snake

    return node, snake(name)


# Every procedure ---------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", sorted(app_router))
def test_every_procedure_has_a_typed_keyword_only_method(wire: str) -> None:
    procedure = app_router[wire]
    sync = Client("http://127.0.0.1:1")
    flavours = {
        "sync": namespace_of(sync, wire),
        "async": namespace_of(AsyncClient("http://127.0.0.1:1"), wire),
        "batch": namespace_of(sync.batch(), wire),
    }
    fields = procedure.params_model.model_fields
    for flavour, (namespace, name) in flavours.items():
        method = getattr(namespace, name)
        assert callable(method), (flavour, wire)
        parameters = inspect.signature(method).parameters
        assert set(parameters) == set(fields), (flavour, wire)
        for field_name, parameter in parameters.items():
            assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
            assert (parameter.default is inspect.Parameter.empty) == fields[field_name].is_required()
            if not fields[field_name].is_required():
                assert parameter.default is NOT_GIVEN
        assert inspect.iscoroutinefunction(method) == (flavour == "async")
        doc = inspect.getdoc(method) or ""
        assert wire in doc and procedure.guard.value in doc and procedure.kind.value in doc
        if procedure.description:
            assert procedure.description.split("\n")[0][:40] in doc.replace("\n", " ")


def _sample(annotation: Any) -> Any:
    """A plausible value of a client type: enough to reach the procedure, not to succeed."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # the last type: UUID of `str | UUID`
        return _sample([a for a in args if a is not type(None)][-1])
    if origin is Literal:
        return args[0]
    if origin is list:
        return [_sample(args[0])]
    if origin is dict or annotation is dict:
        return {}
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation(**required_samples(annotation))
    samples: dict[Any, Any] = {
        uuid.UUID: uuid.uuid4(),
        str: "x",
        int: 1,
        float: 1.0,
        bool: True,
        datetime: datetime.now(UTC),
    }
    if annotation in samples:
        return samples[annotation]
    raise AssertionError(f"no sample for {annotation!r}: extend _sample")


def required_samples(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    return {name: _sample(f.annotation) for name, f in model.model_fields.items() if f.is_required()}


@pytest.mark.parametrize("wire", sorted(app_router))
def test_every_procedure_is_reached_through_its_method(server: ServerThread, world: World, wire: str) -> None:
    """Called with its required arguments only, each procedure answers with a result or a
    typed refusal; never 'method not found' (a wrong wire name) or an internal error."""
    org = world.org()
    namespace, name = namespace_of(Client(server.url, token=org.admin_token), wire)
    params_model = getattr(nh, app_router[wire].params_model.__name__)
    try:
        result = getattr(namespace, name)(**required_samples(params_model))
    except (nh.InvalidParams, nh.NotFound, nh.Conflict, nh.Forbidden) as exc:
        assert exc.request_id and exc.data["path"] == wire
    else:
        assert result is not None or app_router[wire].result_type is type(None)


# Calls, results, errors --------------------------------------------------------------------------


def test_whoami_returns_typed_models(client: Client, org: Org) -> None:
    me = client.auth.whoami()
    assert isinstance(me, nh.Whoami)
    assert me.role == "member"
    assert me.organisation.id == uuid.UUID(org.id)
    assert me.user.email.startswith("member-")


def test_list_crm_providers(client: Client) -> None:
    providers = client.contacts.list_crm_providers()
    assert {p.name for p in providers} >= {"agentOS", "Reapit", "Alto", "Street", "Loop"}
    assert all(isinstance(p, nh.CrmProvider) and p.auth_type in ("api_key", "oauth2") for p in providers)


@NEEDS_CONTACTS
def test_contact_lifecycle_through_the_client(server: ServerThread, world: World) -> None:
    org = world.org()
    with Client(server.url, token=org.member_token) as client:
        email = f"jane.{uuid.uuid4().hex[:8]}@example.co.uk"
        created = client.contacts.create(
            first_name="Jane", last_name="Doe", email=email, consent_status="granted", category="seller"
        )
        assert isinstance(created, nh.ContactDetail)
        assert created.category == "seller" and created.group == "prospect"
        assert created.active_assignment is not None

        moved = client.contacts.assign_category(id=created.id, category="active_seller", reason="instructed")
        assert moved.category == "active_seller" and moved.group == "existing_client"
        history = client.contacts.get_category_history(id=created.id)
        assert [a.category for a in history][:2] in (["active_seller", "seller"], ["seller", "active_seller"])

        # Only the arguments given are sent: a left-out field stays, an explicit None clears.
        updated = client.contacts.update(id=created.id, postcode="sw1a 1aa")
        assert updated.first_name == "Jane" and updated.postcode == "SW1A 1AA"
        cleared = client.contacts.update(id=created.id, first_name=None)
        assert cleared.first_name is None and cleared.last_name == "Doe"

        fetched = client.contacts.get(id=created.id)
        assert fetched.email == email and fetched.consent_status == "granted"

        with pytest.raises(nh.Conflict) as conflict:
            client.contacts.create(email=email.upper())
        assert conflict.value.code == "CONFLICT" and conflict.value.rpc_code == -32009

        with pytest.raises(nh.Forbidden):  # contacts.delete is for admins
            client.contacts.delete(id=created.id)
    with Client(server.url, token=org.admin_token) as admin:
        erasure = admin.contacts.delete(id=created.id)
        assert isinstance(erasure, nh.ContactErasure) and erasure.contact_id == created.id
        with pytest.raises(nh.NotFound) as missing:
            admin.contacts.get(id=created.id)
    assert missing.value.request_id and missing.value.data["httpStatus"] == 404


@NEEDS_CONTACTS
def test_one_category_as_a_string_is_taken_by_server_schema_and_client(
    server: ServerThread, world: World
) -> None:
    """Issue 20: the server took `category: "seller"` while the OpenRPC schema and this client
    allowed only a list. All three take one category or a list of them."""
    import jsonschema

    org = world.org()
    with Client(server.url, token=org.member_token) as client:
        seller = client.contacts.create(first_name="One", category="seller")
        client.contacts.create(first_name="Two", category="buyer")
        assert [c.id for c in client.contacts.list(category="seller").items] == [seller.id]
        assert [c.id for c in client.contacts.iter_list(category=["seller"])] == [seller.id]
        with pytest.raises(nh.InvalidParams):
            client.contacts.list(category="vendor")  # type: ignore[arg-type]
    raw = httpx.post(
        server.url + "/rpc",
        json={"jsonrpc": "2.0", "id": 1, "method": "contacts.list", "params": {"category": "seller"}},
        headers={"Authorization": f"Bearer {org.member_token}"},
    ).json()
    assert [c["id"] for c in raw["result"]["items"]] == [str(seller.id)]

    document = httpx.get(server.url + "/openrpc.json").json()
    method = next(m for m in document["methods"] if m["name"] == "contacts.list")
    schema = next(p["schema"] for p in method["params"] if p["name"] == "category")
    check = jsonschema.Draft7Validator({**schema, "components": document["components"]})
    assert check.is_valid("seller") and check.is_valid(["seller", "buyer"]) and check.is_valid(None)
    assert not check.is_valid("vendor") and not check.is_valid([]) and not check.is_valid(["vendor"])


@NEEDS_CONTACTS
def test_ids_may_be_given_as_strings(client: Client) -> None:
    """Issue 20: an id read from a CSV file or argv is a str; the server checks it is a UUID."""
    created = client.contacts.create(first_name="Str", category="buyer")
    assert client.contacts.get(id=str(created.id)).id == created.id
    moved = client.contacts.assign_category(id=str(created.id).upper(), category="seller")
    assert moved.category == "seller"
    with pytest.raises(nh.InvalidParams) as info:
        client.contacts.get(id="not-a-uuid")
    assert [issue.path for issue in info.value.issues] == ["id"] and info.value.request_id


def test_bad_token_is_unauthorized(server: ServerThread) -> None:
    with Client(server.url, token="nh_not_a_real_token") as client, pytest.raises(nh.Unauthorized) as info:
        client.auth.whoami()
    error = info.value
    assert error.code == "UNAUTHORIZED" and error.rpc_code == -32001 and error.http_status == 401
    assert error.request_id and error.data["requestId"] == error.request_id
    assert isinstance(error, nh.RPCError) and isinstance(error, nh.NurtureHubError)


def test_no_token_is_unauthorized(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NURTUREHUB_TOKEN", raising=False)
    with Client(server.url) as client, pytest.raises(nh.Unauthorized):
        client.auth.whoami()


def test_member_calling_an_admin_procedure_is_forbidden(probe_server: ServerThread, org: Org) -> None:
    with Client(probe_server.url, token=org.member_token) as client:
        with pytest.raises(nh.Forbidden) as info:
            client.call("probe.adminOnly", {"name": "x"}, kind="query")
        assert info.value.data["path"] == "probe.adminOnly"
        with pytest.raises(nh.Forbidden):
            client.call("probe.renameOrganisation", {"name": "Renamed"})


def test_unknown_procedure_is_method_not_found(client: Client) -> None:
    with pytest.raises(nh.MethodNotFound) as info:
        client.call("contacts.noSuchProcedure")
    assert info.value.rpc_code == -32601 and "contacts.noSuchProcedure" in info.value.message


def test_a_request_the_server_cannot_read_is_invalid_request(client: Client) -> None:
    with pytest.raises(nh.InvalidRequest) as info:
        client.call("")  # an empty method name is not a JSON-RPC request
    assert info.value.rpc_code == -32600 and info.value.request_id


def test_invalid_params_carry_field_issues(probe_server: ServerThread, org: Org) -> None:
    with Client(probe_server.url, token=org.admin_token) as client, pytest.raises(nh.InvalidParams) as info:
        client.call("probe.adminOnly", {"name": "", "extra": 1}, kind="query")
    issues = {issue.path: issue for issue in info.value.issues}
    assert set(issues) == {"name", "extra"}
    assert all(isinstance(issue, nh.FieldIssue) and issue.message for issue in issues.values())
    assert info.value.rpc_code == -32602 and info.value.code == "BAD_REQUEST"


@NEEDS_CONTACTS
def test_invalid_typed_argument_is_invalid_params(client: Client) -> None:
    with pytest.raises(nh.InvalidParams) as info:
        client.contacts.create(email="not an email")
    assert [issue.path for issue in info.value.issues] == ["email"]


def test_arguments_the_client_refuses_are_invalid_params_too(server: ServerThread, org: Org) -> None:
    """Issue 20: a bad argument the client's own model caught surfaced as a raw pydantic
    ValidationError; it is the client's InvalidParams, with wire paths, in every flavour."""
    sent = Counting()
    client = Client(server.url, token=org.member_token, http_client=httpx.Client(transport=sent))
    calls = {
        "sync": lambda: client.contacts.list(limit="many", consent_status="maybe"),  # type: ignore[arg-type]
        "batch": lambda: client.batch().contacts.list(limit="many", consent_status="maybe"),  # type: ignore[arg-type]
        "async": lambda: asyncio.run(
            AsyncClient(server.url).contacts.list(limit="many", consent_status="maybe")  # type: ignore[arg-type]
        ),
    }
    for flavour, call in calls.items():
        with pytest.raises(nh.InvalidParams) as info:
            call()
        assert [issue.path for issue in info.value.issues] == ["consentStatus", "limit"], flavour
        message = info.value.message
        assert message.startswith("Invalid params: consentStatus: ") and message.endswith("(and 1 more)")
        assert info.value.code == "BAD_REQUEST" and info.value.request_id is None
        assert not isinstance(info.value, pydantic.ValidationError)
    assert sent.attempts == 0  # refused before anything was sent


def test_unexpected_failure_is_internal_error_without_details(probe_server: ServerThread) -> None:
    with Client(probe_server.url) as client, pytest.raises(nh.InternalError) as info:
        client.call("probe.broken", kind="query")
    assert "secret" not in str(info.value) and "hunter2" not in repr(info.value.data)
    assert info.value.request_id


def test_batch_over_the_limit_is_payload_too_large(database_url: str, org: Org) -> None:
    small = ServerThread(database_url, app_router, max_batch_length=2)
    try:
        with Client(small.url, token=org.member_token) as client:
            batch = client.batch()
            with pytest.raises(nh.PayloadTooLarge), batch:
                calls = [batch.auth.whoami() for _ in range(3)]
            with pytest.raises(nh.PayloadTooLarge):  # every call of the refused batch says so
                calls[0].result()
    finally:
        small.stop()


@pytest.mark.parametrize(
    "server_class",
    [
        cls
        for cls in vars(server_errors).values()
        if isinstance(cls, type)
        and issubclass(cls, server_errors.RPCError)
        and cls is not server_errors.RPCError
    ],
)
def test_each_server_error_code_has_its_client_class(server_class: type[server_errors.RPCError]) -> None:
    wire = {
        "code": server_class.rpc_code,
        "message": server_class.default_message,
        "data": {"code": server_class.code, "httpStatus": server_class.http_status, "requestId": "req-1"},
    }
    error = nh.RPCError.from_wire(wire)
    assert type(error).__name__ == server_class.__name__
    assert type(error) is getattr(nh, server_class.__name__)
    assert (error.code, error.rpc_code, error.message, error.request_id) == (
        server_class.code, server_class.rpc_code, server_class.default_message, "req-1",
    )  # fmt: skip


def test_an_error_code_newer_than_the_client_stays_an_rpc_error() -> None:
    error = nh.RPCError.from_wire({"code": -32099, "message": "Teapot", "data": {"code": "TEAPOT"}})
    assert type(error) is nh.RPCError and error.code == "TEAPOT" and error.rpc_code == -32099


# Batches -----------------------------------------------------------------------------------------


def test_batch_is_one_request_and_each_call_resolves_on_its_own(server: ServerThread, org: Org) -> None:
    client, transport = counted(server.url, org.member_token)
    with client, client.batch() as batch:
        me = batch.auth.whoami()
        providers = batch.contacts.list_crm_providers()
        unknown = batch.call("contacts.noSuchProcedure")
        assert not me.done
    assert transport.attempts == 1
    assert isinstance(me.result(), nh.Whoami) and me.result().role == "member"
    assert len(providers.result()) >= 5 and providers.exception() is None
    with pytest.raises(nh.MethodNotFound):
        unknown.result()
    assert isinstance(unknown.exception(), nh.MethodNotFound)


@NEEDS_CONTACTS
def test_batch_with_a_failing_typed_call(server: ServerThread, world: World) -> None:
    org = world.org()
    with Client(server.url, token=org.member_token) as client:
        with client.batch() as batch:
            created = batch.contacts.create(first_name="Batch", category="buyer")
            missing = batch.contacts.get(id=uuid.uuid4())
            forbidden = batch.contacts.delete(id=uuid.uuid4())
        assert created.result().first_name == "Batch"
        with pytest.raises(nh.NotFound):
            missing.result()
        with pytest.raises(nh.Forbidden):
            forbidden.result()
        # The failures did not undo the success: each call has its own transaction.
        assert client.contacts.get(id=created.result().id).category == "buyer"


def test_batch_results_are_not_ready_inside_the_block(client: Client) -> None:
    with client.batch() as batch:
        me = batch.auth.whoami()
        with pytest.raises(RuntimeError):
            me.result()
    assert me.done


def test_empty_batch_sends_nothing(server: ServerThread, org: Org) -> None:
    client, transport = counted(server.url, org.member_token)
    with client, client.batch():
        pass
    assert transport.attempts == 0


# Pagination --------------------------------------------------------------------------------------


@NEEDS_CONTACTS
def test_iterating_every_page_of_a_filtered_list(server: ServerThread, world: World) -> None:
    org = world.org()
    client, transport = counted(server.url, org.member_token)
    with client:
        sellers = {
            client.contacts.create(first_name=f"Seller {i}", category="seller", consent_status="granted").id
            for i in range(7)
        }
        client.contacts.create(first_name="Denied", category="seller", consent_status="denied")
        client.contacts.create(first_name="Buyer", category="buyer", consent_status="granted")
        before = transport.attempts
        found = [
            c.id for c in client.contacts.iter_list(category=["seller"], consent_status="granted", limit=3)
        ]
    assert sorted(found) == sorted(sellers) and len(found) == 7
    assert transport.attempts - before == 3  # pages of 3, 3 and 1


@NEEDS_CONTACTS
def test_async_client_calls_batches_and_pages(server: ServerThread, world: World) -> None:
    org = world.org()

    async def scenario() -> tuple[str, list[str], str]:
        async with AsyncClient(server.url, token=org.member_token) as client:
            me = await client.auth.whoami()
            for i in range(3):
                await client.contacts.create(first_name=f"Async {i}", category="landlord")
            names = [c.first_name or "" async for c in client.contacts.iter_list(limit=2)]
            async with client.batch() as batch:
                missing = batch.contacts.get(id=uuid.uuid4())
            return me.role, names, type(missing.exception()).__name__

    role, names, error = asyncio.run(scenario())
    assert role == "member" and sorted(names) == ["Async 0", "Async 1", "Async 2"] and error == "NotFound"


# Configuration, timeouts, retries ----------------------------------------------------------------


def test_configuration_from_the_environment(
    server: ServerThread, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTUREHUB_URL", server.url)
    monkeypatch.setenv("NURTUREHUB_TOKEN", org.owner_token)
    with Client() as client:
        assert client.endpoint == f"{server.url}/rpc"
        assert client.auth.whoami().role == "owner"
    with Client(f"{server.url}/rpc", token=org.member_token) as client:  # arguments win
        assert client.auth.whoami().role == "member"


def test_no_url_anywhere_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NURTUREHUB_URL", raising=False)
    with pytest.raises(nh.ConfigurationError, match="NURTUREHUB_URL"):
        Client()


def test_queries_are_retried_when_the_connection_fails(server: ServerThread, org: Org) -> None:
    client, transport = counted(server.url, org.member_token, failures=2, retries=2)
    with client:
        assert client.auth.whoami().role == "member"
    assert transport.attempts == 3


def test_mutations_are_never_retried(probe_server: ServerThread, org: Org) -> None:
    client, transport = counted(probe_server.url, org.admin_token, failures=1, retries=3)
    with client, pytest.raises(nh.ConnectionFailed):
        client.call("probe.renameOrganisation", {"name": "Not Twice"})
    assert transport.attempts == 1


@NEEDS_CONTACTS
def test_typed_mutations_are_never_retried(server: ServerThread, org: Org) -> None:
    client, transport = counted(server.url, org.member_token, failures=1, retries=3)
    with client, pytest.raises(nh.ConnectionFailed):
        client.contacts.create(first_name="Once")
    assert transport.attempts == 1


def test_retries_give_up_with_connection_failed() -> None:
    port = free_port()  # nothing listens there
    transport = Counting()
    with Client(f"http://127.0.0.1:{port}", http_client=httpx.Client(transport=transport),
                retries=2, backoff=0.01) as client:  # fmt: skip
        with pytest.raises(nh.ConnectionFailed) as info:
            client.auth.whoami()
    assert transport.attempts == 3
    assert isinstance(info.value, nh.TransportError) and str(port) in str(info.value)


def test_a_slow_answer_is_a_timeout_and_not_retried(probe_server: ServerThread) -> None:
    client, transport = counted(probe_server.url, "", timeout=0.3, retries=3)
    with client, pytest.raises(nh.Timeout):
        client.call("probe.sleep", {"seconds": 1.5}, kind="query")
    assert transport.attempts == 1


def test_guard_and_kind_are_in_the_docstring() -> None:
    doc = inspect.getdoc(Client("http://127.0.0.1:1").auth.whoami) or ""
    assert "auth.whoami" in doc and "authed" in doc and "query" in doc
    assert Guard.AUTHED.value in doc and Kind.QUERY.value in doc


NEEDS_CRM = pytest.mark.skipif("crm.connect" not in app_router, reason="crm.* is not in the registry yet")


@NEEDS_CRM
def test_no_encryption_key_is_service_unavailable(server: ServerThread, world: World) -> None:
    with (
        Client(server.url, token=world.org().admin_token) as admin,
        pytest.raises(nh.ServiceUnavailable) as info,
    ):
        admin.crm.connect(provider_id="reapit", credentials={"customerId": "SBOX"})
    assert info.value.http_status == 503 and "encryption key" in info.value.message


@NEEDS_CRM
def test_crm_connection_lifecycle_through_the_client(database_url: str, world: World) -> None:
    from server.crypto import Keyring, new_key_entry

    keyed = ServerThread(database_url, app_router, encryption_keys=Keyring.parse(new_key_entry()))
    org = world.org()
    try:
        with Client(keyed.url, token=org.admin_token) as admin:
            connection = admin.crm.connect(provider_id="reapit", credentials={"customerId": "SBOX"})
            assert isinstance(connection, nh.CrmConnection) and connection.provider_name == "Reapit"
            paused = admin.crm.update_connection(connection_id=connection.id, paused=True)
            assert paused.status == "paused"
            with Client(keyed.url, token=org.member_token) as member:
                assert [c.id for c in member.crm.list_connections()] == [connection.id]
                with pytest.raises(nh.Forbidden):
                    member.crm.disconnect(connection_id=connection.id)
            assert admin.crm.disconnect(connection_id=connection.id).connection_id == connection.id
            assert admin.crm.list_connections() == []
    finally:
        keyed.stop()


class AsyncCounting(httpx.AsyncBaseTransport):
    """The async twin of Counting."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self._real = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise httpx.ConnectError("connection refused", request=request)
        return await self._real.handle_async_request(request)


def test_async_client_retries_queries_but_not_mutations(probe_server: ServerThread, org: Org) -> None:
    async def attempts(method: str, kind: Literal["query", "mutation"]) -> tuple[int, str]:
        transport = AsyncCounting(failures=1)
        async with httpx.AsyncClient(transport=transport) as http, AsyncClient(
            probe_server.url, token=org.admin_token, retries=2, backoff=0.01, http_client=http
        ) as client:  # fmt: skip
            try:
                outcome = type(await client.call(method, {"name": "Async Agency"}, kind=kind)).__name__
            except nh.NurtureHubError as exc:
                outcome = type(exc).__name__
        return transport.attempts, outcome

    assert asyncio.run(attempts("probe.adminOnly", "query")) == (2, "dict")
    assert asyncio.run(attempts("probe.renameOrganisation", "mutation")) == (1, "ConnectionFailed")

"""Batches: calls collected in a `with` block go to the server as one JSON-RPC batch when the
block ends, and each call's result or error resolves on its own Pending.

Each call in a batch runs in its own transaction on the server, as tRPC's batch link does, so
one failing call does not undo the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._exceptions import NurtureHubError
from ._transport import AsyncTransport, Call, Kind, Outcome, SyncTransport

__all__ = ["AsyncBatchBase", "BatchBase", "Collector", "Pending"]

T = TypeVar("T")
B = TypeVar("B", bound="BatchBase")
A = TypeVar("A", bound="AsyncBatchBase")

_UNSET: Any = object()


class Pending(Generic[T]):
    """The outcome of one call in a batch: read it with result() once the batch is sent."""

    __slots__ = ("_error", "_value", "method")

    def __init__(self, method: str) -> None:
        self.method = method
        self._value: Any = _UNSET
        self._error: NurtureHubError | None = None

    @property
    def done(self) -> bool:
        return self._value is not _UNSET or self._error is not None

    def result(self) -> T:
        """The call's result; raises its error (an RPCError subclass) if it failed."""
        if self._error is not None:
            raise self._error
        if self._value is _UNSET:
            raise RuntimeError(f"{self.method}: the batch has not been sent yet")
        return self._value  # type: ignore[no-any-return]

    def exception(self) -> NurtureHubError | None:
        """The call's error, or None if it succeeded."""
        if not self.done:
            raise RuntimeError(f"{self.method}: the batch has not been sent yet")
        return self._error

    def _settle(self, outcome: Outcome[Any]) -> None:
        if outcome.error is not None:
            self._error = outcome.error
        else:
            self._value = outcome.value

    def __repr__(self) -> str:
        state = "pending" if not self.done else "failed" if self._error else "done"
        return f"<Pending {self.method} {state}>"


class Collector:
    """What the batch namespaces add their calls to."""

    def __init__(self) -> None:
        self._entries: list[tuple[Call[Any], Pending[Any]]] = []
        self._sent = False

    def add(self, call: Call[T]) -> Pending[T]:
        if self._sent:
            raise RuntimeError("this batch was already sent; start a new one")
        pending: Pending[T] = Pending(call.method)
        self._entries.append((call, pending))
        return pending

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, kind: Kind = "mutation"
    ) -> Pending[Any]:
        """Add a call by its wire name; its result is the raw JSON."""
        return self.add(Call(method, params or {}, None, kind))

    def __len__(self) -> int:
        return len(self._entries)

    def _take(self) -> list[tuple[Call[Any], Pending[Any]]]:
        if self._sent:
            raise RuntimeError("this batch was already sent")
        self._sent = True
        return self._entries

    @staticmethod
    def _settle(entries: Sequence[tuple[Call[Any], Pending[Any]]], outcomes: Sequence[Outcome[Any]]) -> None:
        for (_, pending), outcome in zip(entries, outcomes, strict=True):
            pending._settle(outcome)

    @staticmethod
    def _fail(entries: Sequence[tuple[Call[Any], Pending[Any]]], error: NurtureHubError) -> None:
        for _, pending in entries:
            pending._settle(Outcome(error=error))


class BatchBase(Collector):
    """A sync batch; the calls are sent when the `with` block ends without an exception."""

    def __init__(self, transport: SyncTransport) -> None:
        super().__init__()
        self._transport = transport
        self._bind()

    def _bind(self) -> None:
        """Attach the namespaces (the generated subclass does)."""

    def send(self) -> None:
        """Send the batch. A failure of the whole batch (unreachable server, too many calls)
        is raised here and also settles every Pending with it."""
        entries = self._take()
        if not entries:
            return
        try:
            outcomes = self._transport.batch([call for call, _ in entries])
        except NurtureHubError as exc:
            self._fail(entries, exc)
            raise
        self._settle(entries, outcomes)

    def __enter__(self: B) -> B:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.send()


class AsyncBatchBase(Collector):
    """The async twin of BatchBase: `async with client.batch() as batch:`."""

    def __init__(self, transport: AsyncTransport) -> None:
        super().__init__()
        self._transport = transport
        self._bind()

    def _bind(self) -> None:
        """Attach the namespaces (the generated subclass does)."""

    async def send(self) -> None:
        """Send the batch; see BatchBase.send."""
        entries = self._take()
        if not entries:
            return
        try:
            outcomes = await self._transport.batch([call for call, _ in entries])
        except NurtureHubError as exc:
            self._fail(entries, exc)
            raise
        self._settle(entries, outcomes)

    async def __aenter__(self: A) -> A:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.send()

"""Iterate every item of a cursor-paginated query, page after page, without handling cursors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from ._exceptions import UnexpectedResponse

__all__ = ["aiter_items", "iter_items"]

T = TypeVar("T", covariant=True)
I = TypeVar("I")  # noqa: E741


class Page(Protocol[T]):
    @property
    def items(self) -> Sequence[T]: ...

    @property
    def next_cursor(self) -> str | None: ...


def _next(cursor: str | None, page: Page[object]) -> str | None:
    if page.next_cursor is not None and page.next_cursor == cursor:
        # A server answering the same cursor again would make this loop forever.
        raise UnexpectedResponse("the server returned the same page cursor twice")
    return page.next_cursor


def iter_items(fetch: Callable[[str | None], Page[I]]) -> Iterator[I]:
    """Every item, fetching the next page (fetch(next_cursor)) only when it is needed."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page.items
        cursor = _next(cursor, page)
        if not cursor:
            return


async def aiter_items(fetch: Callable[[str | None], Awaitable[Page[I]]]) -> AsyncIterator[I]:
    """The async twin of iter_items."""
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in page.items:
            yield item
        cursor = _next(cursor, page)
        if not cursor:
            return

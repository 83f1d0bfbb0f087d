"""VideoChat and AsyncVideoChat behind one blocking interface, so a client test holds for
both twins: `twin` fixtures parametrize over "sync" and "async"."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from vidchat.client import AsyncVideoChat, VideoChat

KINDS = ["sync", "async"]


class _BlockingIterator:
    """An async generator, stepped from blocking code (lazily, so early stops work)."""

    def __init__(self, agen: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._agen, self._loop = agen, loop

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self._loop.run_until_complete(self._agen.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self._loop.run_until_complete(self._agen.aclose())


class Twin:
    """``kind`` "sync" is VideoChat as it is; "async" runs AsyncVideoChat on a private loop.

    ``hooks`` are httpx event hooks, given as plain functions for both kinds.
    """

    def __init__(self, kind: str, base_url: str, *,
                 transport: Callable[[httpx.Request], httpx.Response] | None = None,
                 hooks: dict[str, list[Callable[[Any], None]]] | None = None,
                 **kwargs: Any) -> None:
        self.kind = kind
        mock = httpx.MockTransport(transport) if transport else None
        if kind == "sync":
            http = httpx.Client(transport=mock, event_hooks=hooks or {}, timeout=120) \
                if (mock or hooks) else None
            self.chat: Any = VideoChat(base_url, http_client=http, **kwargs)
            self.loop = None
            return
        self.loop = asyncio.new_event_loop()
        async_hooks = {event: [_awaitable(f) for f in fs] for event, fs in (hooks or {}).items()}
        http = httpx.AsyncClient(transport=mock, event_hooks=async_hooks, timeout=120) \
            if (mock or hooks) else None
        self.chat = AsyncVideoChat(base_url, http_client=http, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.chat, name)
        if not callable(attr) or self.loop is None:
            return attr
        loop = self.loop

        def blocking(*args: Any, **kwargs: Any) -> Any:
            out = attr(*args, **kwargs)
            if inspect.isasyncgen(out):
                return _BlockingIterator(out, loop)
            if inspect.iscoroutine(out):
                return loop.run_until_complete(out)
            return out

        return blocking

    def close(self) -> None:
        if self.loop is None:
            self.chat.close()
            return
        self.loop.run_until_complete(self.chat.close())
        self.loop.close()

    def __enter__(self) -> Twin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _awaitable(f: Callable[[Any], None]) -> Callable[[Any], Any]:
    async def hook(arg: Any) -> None:
        f(arg)

    return hook

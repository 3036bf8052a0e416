"""What the API process holds for its lifetime: its runtime (settings, database, keys,
Redis) and the send dispatcher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from api_shim.dispatch import SendDispatcher
from worker import drains
from worker.db import Database
from worker.domain.secrets import Keys
from worker.models import Channel
from worker.runtime import Runtime
from worker.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Services:
    runtime: Runtime
    dispatcher: SendDispatcher

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def database(self) -> Database:
        return self.runtime.database

    @property
    def keys(self) -> Keys:
        return self.runtime.keys

    def _in_write(self, fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
        return self.database.run(lambda session: fn(session, **kwargs), write=True)

    def _in_read(self, fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
        return self.database.run(lambda session: fn(session, **kwargs), write=False)

    async def write(self, fn: Callable[..., T], **kwargs: Any) -> T:
        """Run domain function `fn(session, **kwargs)` in one short read-write transaction,
        off the event loop."""
        return await run_in_threadpool(self._in_write, fn, kwargs)

    async def webhook_events_queued(self) -> None:
        """Ask for a webhook drain now (else the next sweep finds the events, in 10 s)."""
        await run_in_threadpool(lambda: drains.request_drain(self.runtime, channel=Channel.WEBHOOK))

    async def read(self, fn: Callable[..., T], **kwargs: Any) -> T:
        """The same in a read-only transaction."""
        return await run_in_threadpool(self._in_read, fn, kwargs)

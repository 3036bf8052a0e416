"""The bare round trip: what a plain FastAPI + Celery service does for a no-op, the
benchmark's reference (issue 29).

    BARE_REDIS_URL=redis://127.0.0.1:6379/10 celery -A bench.bare worker -c 2
    BARE_REDIS_URL=... uvicorn bench.bare:create_api --factory --no-access-log

`PUT /noop` publishes the task `bare.noop` to a plain Celery worker (Celery's defaults:
prefork, prefetch 4, acknowledged early, results in Redis) and answers once its result
arrives over Redis pub/sub, where Celery's Redis result backend publishes it. Nothing of
securesend's runs here: not its worker, its settings, its publisher or its listener, and
no access log. A user comparing securesend with a plain Celery service sees this.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio
from celery import Celery
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

REDIS_URL = os.environ.get("BARE_REDIS_URL", "redis://127.0.0.1:6379/10")
WAIT_SECONDS = 60.0
NOOP_TASK = "bare.noop"

celery = Celery("bare", broker=REDIS_URL, backend=REDIS_URL)


@celery.task(name=NOOP_TASK)
def noop() -> None:
    return None


class Results:
    """One pub/sub connection for every waiting request: a future per task id, resolved
    by the message Celery's Redis backend publishes on `celery-task-meta-<id>`."""

    def __init__(self, url: str) -> None:
        self.client = redis.asyncio.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.waiting: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pubsub.subscribe("bare-ready")  # a connection before the first request
        self.reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        await self.pubsub.aclose()
        await self.client.aclose()

    async def _read(self) -> None:
        async for message in self.pubsub.listen():
            future = self.waiting.pop(message["channel"], None)
            if future is not None and not future.done():
                future.set_result(json.loads(message["data"]))

    @asynccontextmanager
    async def watch(self, task_id: str) -> AsyncIterator[asyncio.Future[dict[str, Any]]]:
        channel = f"celery-task-meta-{task_id}".encode()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[channel] = future
        await self.pubsub.subscribe(channel)
        try:
            yield future
        finally:
            self.waiting.pop(channel, None)
            await self.pubsub.unsubscribe(channel)


def create_api() -> FastAPI:
    results = Results(REDIS_URL)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await results.start()
        yield
        await results.stop()

    api = FastAPI(lifespan=lifespan)

    @api.put("/noop")
    async def run_noop() -> Response:
        task_id = os.urandom(16).hex()
        async with results.watch(task_id) as done:
            await run_in_threadpool(celery.send_task, NOOP_TASK, task_id=task_id)
            meta = await asyncio.wait_for(done, WAIT_SECONDS)
        return JSONResponse({"status": meta.get("status"), "result": meta.get("result")})

    @api.get("/ready")
    async def ready() -> Response:
        return JSONResponse({"ok": True})

    return api

"""The benchmark's reference endpoint: the least a web API that hands work to Celery does.

    REDIS_URL=redis://127.0.0.1:6379/11 python -m uvicorn bench.noop_api:create_app --factory

`PUT /noop` publishes the no-op task `securesend.ping` and answers once its result arrives
over Redis pub/sub: HTTP in, a publish, a worker picking the task up and storing its result,
the notification back, HTTP out. No session, no database, no rules. It is run as one
uvicorn process beside the same workers and the same Redis as securesend's API, driven by
the same load generator, so a SendMessage's figures read as a ratio to it
(`python -m bench`). It uses securesend's own publisher and result listener, which is what
a careful FastAPI + Celery service would write; a cruder one (`AsyncResult.get()` in a
thread per request) would make the ratio look better than it is.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from api_shim.dispatch import RedisResultListener
from worker.celery_factory import create_app as create_celery
from worker.models import new_guid
from worker.queues import PING_TASK, SEND_QUEUE
from worker.settings import Settings

WAIT_SECONDS = 60.0


def create_app() -> FastAPI:
    redis_url = os.environ["REDIS_URL"]
    celery = create_celery(Settings(redis_url=redis_url), results=False)
    listener = RedisResultListener(Settings(redis_url=redis_url))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await listener.start()
        yield
        await listener.stop()

    app = FastAPI(lifespan=lifespan)

    @app.put("/noop")
    async def noop() -> Response:
        task_id = new_guid()
        async with listener.watch(task_id) as done:
            await run_in_threadpool(celery.send_task, PING_TASK, task_id=task_id, queue=SEND_QUEUE)
            meta = await asyncio.wait_for(done, WAIT_SECONDS)
        return JSONResponse({"status": meta.get("status"), "result": meta.get("result")})

    @app.get("/ready")
    async def ready() -> Response:
        return JSONResponse({"ok": True})

    return app

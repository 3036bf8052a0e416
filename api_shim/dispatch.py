"""Enqueue send jobs and await their results without a thread per waiting request.

With Redis, one pub/sub connection per API process listens for the result backend's
notification (Celery publishes each result on `celery-task-meta-<task id>`); each waiting
request subscribes to its own job's channel *before* the job is published: the SUBSCRIBE
is on its way to Redis before the job is, and Redis has long taken it by the time a
worker has run the job and published its result. Its confirmation is not waited for (a
round trip on every send's path); a subscription lost with its connection is what the
job row is checked for after a second. Without Redis (the embedded default) the job row is polled
from the database with growing sleeps. Either way, a wait that ends without an answer is
checked against the job row, which the worker writes in the send's own transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from celery import Celery
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry
from starlette.concurrency import run_in_threadpool

from worker import broker, telemetry
from worker.db import DATABASE_UNAVAILABLE, Database
from worker.domain.jobs import JobView, find_job
from worker.payloads import SendJobV1, SendResult
from worker.queues import SEND_TASK
from worker.redis_clients import async_redis_client, redis_client
from worker.settings import Settings

logger = logging.getLogger(__name__)

RESULT_CHANNEL_PREFIX = "celery-task-meta-"
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
SUBSCRIBE_TIMEOUT_SECONDS = 5.0
IDLE_CHANNEL = "securesend:listener"


class RedisResultListener:
    """One shared pub/sub connection dispatching result notifications to waiting futures."""

    def __init__(self, settings: Settings) -> None:
        # A cut network shows as an error (and a reconnect) in seconds: connecting gives
        # up after 5 s, the idle connection is probed (TCP keepalive, and a PING every
        # 15 s). Meanwhile waiting requests read their answers from the database. Behind
        # Sentinel, each reconnect asks for the master (worker.redis_clients).
        self._client = async_redis_client(
            settings, socket_connect_timeout=5, socket_keepalive=True, health_check_interval=15
        )
        self._pubsub = self._client.pubsub()
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        # Set once the reader holds the pub/sub connection. Only the reader may open it:
        # redis-py's PubSub.connect() is not safe against two first connects at once (the
        # loser's subscription goes to a connection that is then dropped).
        self._connected = asyncio.Event()

    async def start(self) -> None:
        # Never fails: with Redis down the API still starts (and /readyz says why); the
        # reader keeps trying, and waiting requests fall back to the database meanwhile.
        self._reader = asyncio.create_task(self._read_forever(), name="result-listener")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
        await self._client.aclose()

    async def _read_forever(self) -> None:
        while True:
            try:
                if not self._pubsub.subscribed:
                    # redis-py reads nothing until something is subscribed: an idle channel.
                    await self._pubsub.subscribe(IDLE_CHANNEL)
                    self._connected.set()
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep listening; redis-py reconnects
                logger.warning("result listener lost Redis; reconnecting", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        result = self._waiting.get(channel)
        if result is not None and message["type"] == "message" and not result.done():
            meta = json.loads(message["data"])
            if meta.get("status") in READY_STATES:
                result.set_result(meta)

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Future[Any]]:
        channel = RESULT_CHANNEL_PREFIX + job_id
        result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[channel] = result
        try:
            try:
                await asyncio.wait_for(self._connected.wait(), SUBSCRIBE_TIMEOUT_SECONDS)
                await self._pubsub.subscribe(channel)  # sent; its confirmation not awaited
            except (RedisError, OSError):
                raise
            except Exception as e:  # noqa: BLE001
                # redis-py can fail with AttributeError when the connection drops in the
                # middle of a command (seen during a Redis restart): the same as a lost
                # connection to the caller, who then falls back to the database.
                raise RedisConnectionError(f"subscribe failed: {type(e).__name__}") from e
            yield result
        finally:
            self._waiting.pop(channel, None)
            with contextlib.suppress(Exception):
                await self._pubsub.unsubscribe(channel)


class DatabasePoller:
    """The embedded default's waiter: poll the job row, sleeping a little longer each time."""

    FIRST_SLEEP = 0.005
    MAX_SLEEP = 0.1

    def __init__(self, database: Database) -> None:
        self._database = database

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Future[Any]]:
        task = asyncio.create_task(self.poll(job_id))
        try:
            yield task
        finally:
            task.cancel()

    async def poll(self, job_id: str) -> JobView:
        sleep = self.FIRST_SLEEP
        while True:
            await asyncio.sleep(sleep)
            job = await run_in_threadpool(_read_job, self._database, job_id)
            if job is not None and job.finished:
                return job
            sleep = min(sleep * 2, self.MAX_SLEEP)


def _read_job(database: Database, job_id: str) -> JobView | None:
    """The job row, or None when it cannot be read now (the database is down): a job
    that was published may still finish, so its caller is not told it failed."""
    try:
        return database.run(lambda session: find_job(session, job_id), write=False)
    except DATABASE_UNAVAILABLE:
        logger.warning("job %s: the database cannot be reached to read it", job_id)
        return None


class SendDispatcher:
    """Publishes send jobs and waits for their outcome.

    Whatever goes wrong on the way (Redis down when publishing or subscribing, a result
    notification lost in a Redis restart), the request still gets an answer: the job row,
    written by the worker in the send's own transaction, is checked after
    `FIRST_CHECK_SECONDS`, then at doubling intervals up to `MAX_CHECK_SECONDS`, and at the
    end; a job that could not be published is answered 202 and published again by the
    jobs sweep. (The intervals grow because every waiting request checks: with a second
    each, 1,000 requests waiting behind a backlog cost the API a query per millisecond.)
    """

    FIRST_CHECK_SECONDS = 1.0
    MAX_CHECK_SECONDS = 8.0

    def __init__(self, *, celery: Celery, database: Database, settings: Settings) -> None:
        self._celery = celery
        self._database = database
        self._poller = DatabasePoller(database)
        self._waiter: RedisResultListener | DatabasePoller = (
            RedisResultListener(settings) if settings.uses_redis else self._poller
        )
        # Publishes on a Redis broker (`broker.publish_on_redis`), giving up after about
        # as long as Celery's default publish retry policy (three tries, 0.2 s apart).
        self._redis = (
            redis_client(
                settings,
                socket_timeout=2,
                socket_connect_timeout=2,
                retry=Retry(ConstantBackoff(0.2), 3),
            )
            if settings.uses_redis
            else None
        )

    async def start(self) -> None:
        await self._waiter.start()

    async def stop(self) -> None:
        await self._waiter.stop()
        if self._redis is not None:
            self._redis.close()

    def publish(self, job: SendJobV1) -> bool:
        """Publish without waiting, from a thread (the publish blocks); False when the
        broker cannot be reached (the job row stays queued and the jobs sweep publishes it
        later). On Redis, the message is pushed directly (`broker.publish_on_redis`),
        unless traces are on: Celery's publish then records its span and carries the
        trace context in the message's headers."""
        payload = job.model_dump(mode="json", by_alias=True)
        try:
            if self._redis is not None and not telemetry.enabled():
                broker.publish_on_redis(
                    self._redis, SEND_TASK, args=[payload], **job.publish_options()
                )
            else:
                self._celery.send_task(SEND_TASK, args=[payload], **job.publish_options())
        except Exception:  # noqa: BLE001 - kombu raises many kinds; the job row is kept
            logger.warning(
                "could not publish send job %s; the sweep will", job.job_id, exc_info=True
            )
            return False
        return True

    async def _finished(self, job_id: str) -> SendResult | None:
        job = await run_in_threadpool(_read_job, self._database, job_id)
        return _result_of(job) if job is not None and job.finished else None

    async def send_and_wait(
        self, job_id: str, open_and_publish: Callable[[], Awaitable[bool]], timeout: float
    ) -> SendResult | None:
        """Open job `job_id` and publish it (`open_and_publish`, run once, after this
        request listens for the job's result: the notification cannot be missed; it
        answers whether the job was published) and return its result, or None when it is
        not done in `timeout`. What `open_and_publish` raises (rule 1) goes to the caller."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        opened = published = False
        check_in = self.FIRST_CHECK_SECONDS
        try:
            async with self._waiter.watch(job_id) as done:
                opened = True
                published = await open_and_publish()
                while published and (remaining := deadline - loop.time()) > 0:
                    try:
                        outcome = await asyncio.wait_for(
                            asyncio.shield(done), min(remaining, check_in)
                        )
                    except TimeoutError:
                        if (result := await self._finished(job_id)) is not None:
                            return result
                        check_in = min(check_in * 2, self.MAX_CHECK_SECONDS)
                        continue
                    if isinstance(outcome, JobView):
                        return _result_of(outcome)
                    if outcome.get("status") == "SUCCESS":
                        return SendResult.model_validate(outcome["result"])
                    break  # the task itself failed: the job row says how
        except (RedisError, OSError) as e:
            logger.warning(
                "result listener unavailable (%s); polling the database", type(e).__name__
            )
            if not opened:
                opened = True
                published = await open_and_publish()
            if published and (remaining := deadline - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    return _result_of(await asyncio.wait_for(self._poller.poll(job_id), remaining))
        return await self._finished(job_id)


def _result_of(job: JobView) -> SendResult:
    return SendResult(http_status=job.http_status or 200, response=job.response or {})

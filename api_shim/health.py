"""Health endpoints outside /api, without a session: /healthz, /readyz, /metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import redis
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api_shim.services import Services
from api_shim.wire import JSON_TYPE, dumps
from worker.domain import clock, metrics
from worker.queues import ALL_QUEUES

logger = logging.getLogger(__name__)


def _check_database(services: Services) -> str:
    try:
        services.database.run(lambda session: session.execute(text("SELECT 1")), write=False)
    except Exception as e:  # noqa: BLE001 - any failure means "not ready"
        return f"unavailable: {type(e).__name__}"
    return "ok"


def _check_broker(services: Services) -> str:
    settings = services.settings
    if not settings.uses_redis:
        folder = settings.embedded_broker_dir
        return "ok" if folder.is_dir() else f"unavailable: {folder} is missing"
    assert services.runtime.redis is not None
    try:
        services.runtime.redis.ping()
    except redis.RedisError as e:
        return f"unavailable: {type(e).__name__}"
    return "ok"


class _Collector:
    """Reads the figures at scrape time (see worker.domain.metrics)."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        services = self._services
        # A write: the scrape may move the metrics checkpoint (worker.domain.metrics).
        dead_after = timedelta(seconds=services.settings.worker_dead_after_seconds)
        snap = services.database.run(
            lambda session: metrics.snapshot(session, now=clock.now(), worker_dead_after=dead_after)
        )
        sends = CounterMetricFamily(
            "securesend_sends", "SendMessage jobs answered, by result code", labels=["code"]
        )
        for code, count in sorted(snap.sends_by_code.items()):
            sends.add_metric([code], count)
        yield sends
        yield GaugeMetricFamily(
            "securesend_jobs_unfinished", "Send jobs queued or running", value=snap.jobs_queued
        )
        wait = HistogramMetricFamily(
            "securesend_queue_wait_seconds",
            "Time a send job (queue=send: created to started) or an email (queue=mail: "
            "queued to first claimed) waited for a worker, by lane (interactive: its "
            "caller waits on HTTP; bulk)",
            labels=["queue", "lane"],
        )
        for (queue, lane), waits in snap.queue_wait.items():
            buckets = [(metrics.bucket_label(bound), n) for bound, n in waits.buckets]
            wait.add_metric(
                [queue, lane.label],
                [*buckets, ("+Inf", waits.count)],
                sum_value=waits.sum_seconds,
            )
        yield wait
        backlog = GaugeMetricFamily(
            "securesend_outbox_emails", "Outbox emails by delivery status", labels=["status"]
        )
        for status, count in snap.emails_by_status.items():
            backlog.add_metric([status], count)
        yield backlog
        yield CounterMetricFamily(
            "securesend_email_retries",
            "Delivery attempts beyond the first",
            value=snap.email_retries,
        )
        yield CounterMetricFamily(
            "securesend_email_failures", "Emails that failed for good", value=snap.email_failures
        )
        takeovers = CounterMetricFamily(
            "securesend_takeovers",
            "Send jobs and emails taken back from workers that died holding them",
            labels=["kind"],
        )
        for kind in ("jobs", "emails"):
            takeovers.add_metric([kind], snap.takeovers.get(kind, 0))
        yield takeovers
        yield GaugeMetricFamily(
            "securesend_workers_alive",
            "Workers whose heartbeat is recent",
            value=snap.workers_alive,
        )
        client = services.runtime.redis
        if client is not None:
            depth = GaugeMetricFamily(
                "securesend_broker_queue_length", "Messages waiting in Redis", labels=["queue"]
            )
            try:
                for queue in ALL_QUEUES:
                    depth.add_metric([queue], client.llen(queue))
            except redis.RedisError:
                logger.warning("metrics: Redis unavailable for queue lengths")
            yield depth


def register_health(app: FastAPI, services: Services) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(services))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(dumps({"status": "ok"}), media_type=JSON_TYPE)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        checks: dict[str, Any] = {
            "database": await run_in_threadpool(_check_database, services),
            "broker": await run_in_threadpool(_check_broker, services),
        }
        ready = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return Response(dumps(body), status_code=200 if ready else 503, media_type=JSON_TYPE)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(_: Request) -> Response:
        payload = await run_in_threadpool(generate_latest, registry)
        return Response(payload, media_type=CONTENT_TYPE_LATEST)

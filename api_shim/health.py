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
from worker.domain.pace import PaceStoreUnavailable
from worker.queues import ALL_QUEUES
from worker.transports import SmtpTarget

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
            "Email delivery attempts beyond the first (webhook deliveries are not emails)",
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
        yield from _reputation_metrics(snap)
        yield from _webhook_metrics(snap)
        yield GaugeMetricFamily(
            "securesend_workers_alive",
            "Workers whose heartbeat is recent",
            value=snap.workers_alive,
        )
        yield from _pace_metrics(services)
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


def _reputation_metrics(snap: metrics.Snapshot) -> Iterator[Metric]:
    """What comes back of the emails sent (bounce and complaint reports) and the list of
    addresses no email goes to because of them. Gauges, as securesend_outbox_emails: an
    email's count moves from one kind to another when a later report says otherwise."""
    bounces = GaugeMetricFamily(
        "securesend_email_bounces",
        "Emails a bounce or complaint report came back for, by what the latest report said "
        "(hard, soft, complaint)",
        labels=["kind"],
    )
    for kind, count in snap.email_bounces.items():
        bounces.add_metric([kind], count)
    yield bounces
    suppressed = GaugeMetricFamily(
        "securesend_suppressions",
        "Addresses on the suppression list now, by how they got there (manual, bounce, "
        "complaint); expired and removed entries are not counted",
        labels=["source"],
    )
    for source, count in snap.suppressions.items():
        suppressed.add_metric([source], count)
    yield suppressed


def _webhook_metrics(snap: metrics.Snapshot) -> Iterator[Metric]:
    """Webhook deliveries and endpoints. An endpoint is named by its uid (ep_…), never by
    its URL, whose path or query may carry a token; there are few, so the label is
    bounded."""
    deliveries = GaugeMetricFamily(
        "securesend_webhook_deliveries",
        "Webhook deliveries by endpoint (its ep_… id) and outcome (queued, retrying, sent, "
        "failed), of the endpoints that exist",
        labels=["endpoint", "outcome"],
    )
    for (endpoint, outcome), count in snap.webhook_deliveries.items():
        deliveries.add_metric([endpoint, outcome], count)
    yield deliveries
    yield GaugeMetricFamily(
        "securesend_webhook_backlog",
        "Webhook deliveries waiting: queued, or waiting for a retry",
        value=snap.webhook_backlog,
    )
    endpoints = GaugeMetricFamily(
        "securesend_webhook_endpoints",
        "Webhook endpoints by state: enabled, or disabled (a 410, a refused address, or "
        "failing for WEBHOOK_DISABLE_AFTER_DAYS) until an operator adds it again",
        labels=["state"],
    )
    for state in ("enabled", "disabled"):
        endpoints.add_metric([state], snap.webhook_endpoints.get(state, 0))
    yield endpoints


def _pace_metrics(services: Services) -> Iterator[Metric]:
    """Delivery at the relay's pace (worker.domain.pace), from the store every worker
    shares: what each relay and each limited domain sent, was throttled for and deferred;
    the pace each is held to; which relays are up and which one is sending."""
    settings = services.settings
    pacing = services.runtime.pacing()
    hosts = [SmtpTarget.from_url(url).address for url in settings.smtp_urls] or ["eml"]
    try:
        snap = pacing.store.snapshot(len(hosts))
    except (PaceStoreUnavailable, OSError):
        logger.warning("metrics: the pace store is unavailable")
        return
    relays = CounterMetricFamily(
        "securesend_mail_relay_emails",
        "Emails by relay (in SMTP_URL's order) and event: sent (accepted by the relay), "
        "throttled (the relay asked to slow down), deferred (held back for the pace)",
        labels=["relay", "host", "event"],
    )
    domains = CounterMetricFamily(
        "securesend_mail_domain_emails",
        "Emails to each domain of MAIL_DOMAIN_RATE_LIMITS, by event",
        labels=["domain", "event"],
    )
    for name, count in sorted(snap.counts.items()):
        key, _, event = name.rpartition(":")
        kind, _, which = key.partition(":")
        if kind == "relay" and which.isdigit() and int(which) < len(hosts):
            relays.add_metric([which, hosts[int(which)], event], count)
        elif kind == "domain":
            domains.add_metric([which, event], count)
    yield relays
    yield domains
    held = GaugeMetricFamily(
        "securesend_mail_pace",
        "Emails per second each relay and limited domain is held to now: its limit, or "
        "lower while a throttle's pace recovers (absent: no limit and no throttling)",
        labels=["key"],
    )
    for key, rate in sorted(pacing.rates_now(snap.paces, len(hosts)).items()):
        held.add_metric([key], rate)
    yield held
    up = GaugeMetricFamily(
        "securesend_mail_relay_up",
        "1 while a relay's breaker is closed (it is sent through), 0 while it is open",
        labels=["relay", "host"],
    )
    for index, (host, state) in enumerate(zip(hosts, snap.relays, strict=True)):
        up.add_metric([str(index), host], 0 if state.open else 1)
    yield up
    yield GaugeMetricFamily(
        "securesend_mail_active_relay",
        "The relay emails go through (0 is the first of SMTP_URL)",
        value=next((i for i, state in enumerate(snap.relays) if not state.open), 0),
    )


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

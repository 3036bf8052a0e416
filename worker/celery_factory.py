"""The Celery application, configured from a settings object only: a pure function that
builds an app and touches nothing (no folder, no connection, no task import).

Production: Redis as broker and result backend. Embedded default: kombu's filesystem
transport under `VAR_DIR/broker/` and a SQLite result backend, so `securesend up` needs no
server installed and the worker still runs in a process of its own. The worker's own app,
with its tasks and signals, is `worker.celery_app`; publishers (the API, the CLI, other
services through `worker.client`) build theirs here.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from worker import embedded_broker, lanes
from worker.queues import (
    INTERACTIVE_SEND_QUEUE,
    JOBS_SWEEP_TASK,
    MAIL_QUEUE,
    PING_TASK,
    PRUNE_TASK,
    SEND_QUEUE,
    SEND_TASK,
    SWEEP_TASK,
)
from worker.redis_clients import sentinel_kwargs
from worker.settings import Settings


def soft_time_limit(hard_limit: float) -> float:
    """The soft limit raises inside a task first, so that it can record its failure."""
    return max(1.0, hard_limit * 0.8)


# Every Redis connection Celery opens gives up on a silent network within seconds
# (docs/reliability.md, "A cut network"): connecting after 5 s, a reply after 10 s (above
# the broker's 1 s BRPOP), with TCP keepalive, and a PING on a connection idle for 15 s.
REDIS_SOCKET_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 5,
    "socket_timeout": 10,
    "socket_keepalive": True,
    "health_check_interval": 15,
}


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    """Where Sentinel names the master: the same for the broker and the result backend,
    which reads them from its own transport options (not the broker's)."""
    if not settings.uses_sentinel:
        return {}
    return {
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": sentinel_kwargs(settings),
    }


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.uses_redis:
        return {
            **_sentinel_options(settings),
            "visibility_timeout": settings.broker_visibility_timeout_seconds,
            # A drain, then interactive sends, then bulk, never starved (worker.lanes).
            "queue_order_strategy": lanes.REDIS_CYCLE,
            **REDIS_SOCKET_OPTIONS,
        }
    return embedded_broker.transport_options(
        settings.embedded_broker_dir, poll_seconds=settings.embedded_broker_poll_seconds
    )


def create_app(settings: Settings, *, results: bool = True) -> Celery:
    """The Celery app. `results=False` gives a publisher that never reads results itself
    (the API, which awaits them on its own pub/sub connection): with a Redis result
    backend, Celery's result consumer subscribes to the result channel of every task it
    publishes and never reads what arrives unless someone calls `.get()`, so replies and
    results pile up unread on its connections (celery/celery#6963). The workers store
    results with their own backend either way."""
    embedded_broker.register()
    app = Celery(
        "securesend",
        broker=settings.broker_url,
        backend=settings.result_backend_url if results else None,
        set_as_current=results,
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_default_queue=SEND_QUEUE,
        # A send without options goes to the bulk lane; a job's own options
        # (`SendJobV1.publish_options`) name its lane's queue. The jobs sweep recovers
        # interactive sends too: it runs in their lane, not behind a bulk backlog.
        task_routes={
            SEND_TASK: {"queue": SEND_QUEUE},
            PING_TASK: {"queue": SEND_QUEUE},
            JOBS_SWEEP_TASK: {"queue": INTERACTIVE_SEND_QUEUE},
            "securesend.mail.*": {"queue": MAIL_QUEUE},
            "securesend.webhooks.*": {"queue": MAIL_QUEUE},
        },
        # docs/reliability.md explains each of these.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.send_task_time_limit_seconds,
        task_soft_time_limit=soft_time_limit(settings.send_task_time_limit_seconds),
        broker_transport_options=_transport_options(settings),
        result_backend_transport_options=(
            {
                "visibility_timeout": settings.broker_visibility_timeout_seconds,
                **_sentinel_options(settings),
            }
            if settings.uses_redis
            else {}
        ),
        redis_socket_connect_timeout=REDIS_SOCKET_OPTIONS["socket_connect_timeout"],
        redis_socket_timeout=REDIS_SOCKET_OPTIONS["socket_timeout"],
        redis_socket_keepalive=True,
        redis_backend_health_check_interval=REDIS_SOCKET_OPTIONS["health_check_interval"],
        worker_soft_shutdown_timeout=settings.worker_soft_shutdown_seconds,
        worker_enable_soft_shutdown_on_idle=True,
        result_expires=settings.result_ttl_seconds,
        result_extended=False,
        broker_connection_retry_on_startup=True,
        # Task events only while a monitor asks for them: Flower turns them on in every
        # worker by remote control (`enable_events`, every 5 s while it runs; they stay on
        # until `celery control disable_events`). Sent for every task, they cost each
        # send two more Redis publishes for nobody. Not `task_send_sent_event` either: it
        # costs every publisher a second Redis command per task, and the backlog it would
        # show is on /metrics as the queue length.
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        # Every worker's lifeline publishes the sweeps and the hourly retention, under
        # leases (worker/lifeline.py): a beat process is not needed. One that runs (`worker
        # --beat`, `celery beat`) publishes them too, which is harmless.
        beat_schedule={
            "sweep-outbox": {"task": SWEEP_TASK, "schedule": settings.sweep_interval_seconds},
            "sweep-jobs": {"task": JOBS_SWEEP_TASK, "schedule": settings.sweep_interval_seconds},
            "prune": {"task": PRUNE_TASK, "schedule": 3600},
        },
    )
    return app

"""The Celery application, configured from the settings object only.

Production: Redis as broker and result backend. Embedded default: kombu's filesystem
transport under `var/broker/` and a SQLite result backend, so `securesend up` needs no
server installed and the worker still runs in a process of its own.
"""

from __future__ import annotations

import signal
from typing import Any

from celery import Celery
from celery.app import trace
from celery.signals import (
    beat_init,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from worker import embedded_broker
from worker.queues import (
    JOBS_SWEEP_TASK,
    MAIL_QUEUE,
    PING_TASK,
    PRUNE_TASK,
    SEND_QUEUE,
    SEND_TASK,
    SWEEP_TASK,
)
from worker.settings import Settings, get_settings

embedded_broker.register()


def _soft(hard_limit: int) -> float:
    # The soft limit raises inside the task first, so it can record its failure.
    return max(1.0, hard_limit * 0.8)


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.uses_redis:
        return {"visibility_timeout": settings.broker_visibility_timeout_seconds}
    folder = settings.embedded_broker_dir
    (folder / "processed").mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        "polling_interval": settings.embedded_broker_poll_seconds,
    }


def create_app(settings: Settings | None = None, *, results: bool = True) -> Celery:
    """The Celery app. `results=False` gives a publisher that never reads results itself
    (the API, which awaits them on its own pub/sub connection): with a Redis result
    backend, Celery's result consumer subscribes to the result channel of every task it
    publishes and never reads what arrives unless someone calls `.get()`, so replies and
    results pile up unread on its connections (celery/celery#6963). The workers store
    results with their own backend either way."""
    settings = settings or get_settings()
    app = Celery(
        "securesend",
        broker=settings.broker_url,
        backend=settings.result_backend_url if results else None,
        set_as_current=results,
    )
    transport_options = _transport_options(settings)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_default_queue=SEND_QUEUE,
        task_routes={
            SEND_TASK: {"queue": SEND_QUEUE},
            PING_TASK: {"queue": SEND_QUEUE},
            "securesend.mail.*": {"queue": MAIL_QUEUE},
        },
        # docs/reliability.md explains each of these.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.send_task_time_limit_seconds,
        task_soft_time_limit=_soft(settings.send_task_time_limit_seconds),
        broker_transport_options=transport_options,
        result_backend_transport_options=(
            {"visibility_timeout": settings.broker_visibility_timeout_seconds}
            if settings.uses_redis
            else {}
        ),
        visibility_timeout=settings.broker_visibility_timeout_seconds,
        worker_soft_shutdown_timeout=settings.worker_soft_shutdown_seconds,
        worker_enable_soft_shutdown_on_idle=True,
        result_expires=settings.result_ttl_seconds,
        result_extended=False,
        broker_connection_retry_on_startup=True,
        # Flower's events. Not `task_send_sent_event`: it costs every publisher a second
        # Redis command per task (a third of `send_task`), and the backlog it would show
        # is on /metrics as the queue length.
        worker_send_task_events=True,
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


# Celery's success line logs the return value: a send's response carries the rendered
# notification, and logs carry ids and codes only.
trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"

app = create_app()
app.autodiscover_tasks(["worker"], related_name="tasks", force=True)


@worker_init.connect
def _name_this_worker(**_: Any) -> None:
    # In the main process, before the pool forks: its processes claim in this name.
    from worker.identity import new_worker_id

    new_worker_id()


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # A pool process dies with the worker's main process (a kill -9 of the worker leaves
    # no orphans consuming), and must not reuse the parent's pooled database connections.
    from worker.db import get_database
    from worker.processes import die_with_parent

    die_with_parent(signal.SIGKILL)
    get_database().engine.dispose(close=False)


@beat_init.connect
def _beat_dies_with_its_worker(**_: Any) -> None:
    # `worker --beat` runs beat in a child process of its own ("Beat"): not an orphan
    # either. A `celery beat` of its own is left to its process manager.
    import multiprocessing

    from worker.processes import die_with_parent

    if multiprocessing.current_process().name == "Beat":
        die_with_parent(signal.SIGKILL)


@worker_process_shutdown.connect
def _close_mail_connection(**_: Any) -> None:
    from worker.mailer import close_mail_transport

    close_mail_transport()


_lifeline: list[Any] = []  # the main process's one Lifeline, while it runs


@worker_ready.connect
def _start_lifeline(sender: Any = None, **_: Any) -> None:
    # Whatever a previous worker left behind goes out now, with or without beat; from
    # now on the lifeline keeps this worker's heartbeat and takes over dead ones.
    from worker.db import get_database
    from worker.lifeline import Lifeline

    app.send_task(SWEEP_TASK, queue=MAIL_QUEUE)
    app.send_task(JOBS_SWEEP_TASK, queue=SEND_QUEUE)
    settings = get_settings()
    lifeline = Lifeline(app=app, database=get_database(settings), settings=settings)
    lifeline.start()
    _lifeline.append(lifeline)


@worker_shutdown.connect
def _stop_lifeline(**_: Any) -> None:
    while _lifeline:
        _lifeline.pop().stop()

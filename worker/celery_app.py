"""The worker's Celery application: `celery -A worker.celery_app worker` (what `securesend
worker` runs). Importing it builds the app from the environment's settings and registers
the tasks; only a worker (or Flower, which loads the same app) imports it. Publishers build
their own app with `worker.celery_factory.create_app`.

The runtimes: a pool process builds its own at `worker_process_init` (after the fork: it
must not share its parent's connections) and its tasks take it with `runtime.current()`;
the main process builds one at `worker_ready` for its lifeline. Both close at shutdown.

Traces (worker/telemetry.py), when the environment asks for them, are set up by each pool
process at the same point (the exporter is a thread: after the fork) and flushed at its
shutdown; the main process only consumes and records no spans.
"""

from __future__ import annotations

import multiprocessing
import re
import signal
from typing import Any

from celery.app import trace
from celery.signals import (
    beat_init,
    task_prerun,
    task_success,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from worker import runtime as runtimes
from worker import sending, telemetry
from worker.celery_factory import create_app
from worker.domain.send import SendOutcome
from worker.identity import new_worker_id
from worker.payloads import GUID_PATTERN
from worker.processes import die_with_parent
from worker.queues import (
    INTERACTIVE_SEND_QUEUE,
    JOBS_SWEEP_TASK,
    MAIL_QUEUE,
    SEND_TASK,
    SWEEP_TASK,
)
from worker.settings import get_settings

# Celery's success line logs the return value: a send's response carries the rendered
# notification, and logs carry ids and codes only.
trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"

app = create_app(get_settings())
app.autodiscover_tasks(["worker"], related_name="tasks", force=True)


@worker_init.connect
def _name_this_worker(**_: Any) -> None:
    # In the main process, before the pool forks: its processes claim in this name.
    new_worker_id()


@worker_process_init.connect
def _start_pool_process(**_: Any) -> None:
    # A pool process dies with the worker's main process (a kill -9 of the worker leaves
    # no orphans consuming), and opens its own connections.
    die_with_parent(signal.SIGKILL)
    traced = telemetry.configure_tracing("securesend-worker")
    runtime = runtimes.install(runtimes.Runtime.build(get_settings(), celery=app))
    if traced:
        database = runtime.database
        telemetry.instrument_engines(database.engine, database.read_engine)
        # After the Celery instrumentation's own receivers: its task span is current when
        # these run. Connected only when traced, so that untraced tasks pay nothing.
        task_prerun.connect(_annotate_send_span, weak=False, dispatch_uid="securesend-span")
        task_success.connect(_annotate_send_result, weak=False, dispatch_uid="securesend-result")


@worker_process_shutdown.connect
def _stop_pool_process(**_: Any) -> None:
    runtimes.uninstall()
    telemetry.flush()


_GUID = re.compile(GUID_PATTERN)


def _annotate_send_span(
    *, task: Any, task_id: str, args: Any = (), kwargs: Any = None, **_: Any
) -> None:
    # The job's ids, from a payload not validated yet: only values shaped like GUIDs.
    if task.name != SEND_TASK:
        return
    given = sending.payload_of(args, kwargs)
    payload = given if isinstance(given, dict) else {}
    ids = {"securesend.job_id": task_id, "securesend.message_guid": payload.get("messageGuid")}
    telemetry.annotate_current_span(
        {key: value for key, value in ids.items() if isinstance(value, str) and _GUID.match(value)}
    )


def _annotate_send_result(*, sender: Any, result: Any = None, **_: Any) -> None:
    # The answer's HTTP status and result code (as SendJob.result_code), never its body.
    if getattr(sender, "name", None) != SEND_TASK or not isinstance(result, dict):
        return
    response, http_status = result.get("response"), result.get("httpStatus")
    if not isinstance(response, dict) or not isinstance(http_status, int):
        return
    code = SendOutcome(http_status=http_status, body=response).result_code
    telemetry.annotate_current_span(
        {"securesend.result_code": code[:40], "securesend.http_status": http_status}
    )


@beat_init.connect
def _beat_dies_with_its_worker(**_: Any) -> None:
    # `worker --beat` runs beat in a child process of its own ("Beat"): not an orphan
    # either. A `celery beat` of its own is left to its process manager.
    if multiprocessing.current_process().name == "Beat":
        die_with_parent(signal.SIGKILL)


_lifeline: list[Any] = []  # the main process's one Lifeline, while it runs


@worker_ready.connect
def _start_lifeline(sender: Any = None, **_: Any) -> None:
    # Whatever a previous worker left behind goes out now, with or without beat; from
    # now on the lifeline keeps this worker's heartbeat and takes over dead ones, and the
    # intake (in this, the consumer's thread) stops taking tasks while it cannot beat.
    from worker.lifeline import Intake, Lifeline

    app.send_task(SWEEP_TASK, queue=MAIL_QUEUE)
    app.send_task(JOBS_SWEEP_TASK, queue=INTERACTIVE_SEND_QUEUE)
    lifeline = Lifeline(runtimes.Runtime.build(get_settings(), celery=app))
    lifeline.start()
    _lifeline.append(lifeline)
    if sender is not None:
        Intake(sender, lifeline).start()


@worker_shutdown.connect
def _stop_lifeline(**_: Any) -> None:
    while _lifeline:
        lifeline = _lifeline.pop()
        lifeline.stop()
        lifeline.runtime.close()

"""The lifeline: every worker keeps a heartbeat, and any live worker takes back what a
dead one held, within seconds and without a beat process (docs/reliability.md).

A thread in each worker's main (Celery consumer) process, every `HEARTBEAT_SECONDS`:

1. writes the worker's heartbeat with the ids of the tasks it holds (received or running);
2. under the sweep lease (one worker at a time, whichever finds it free), once its own
   heartbeats have gone through for three intervals (so that after a database outage
   nobody is taken for dead before everyone could beat again):
   - gives back to its queue every broker message that no live worker holds and that
     was delivered more than `WORKER_DEAD_AFTER_SECONDS` ago (Redis keeps unacknowledged
     messages aside until its visibility timeout, 300 s; these are a dead worker's);
   - releases the email claims of dead workers and the outbox drain flag a dead worker
     held, and asks for a drain;
   - logs each dead worker with what was taken over, counts it for /metrics;
   - every `SWEEP_INTERVAL_SECONDS`, publishes the outbox and jobs sweeps, and once an
     hour (a lease of its own) the retention.

Beside it, in the consumer's own thread, the `Intake` stops taking new tasks while the
heartbeat cannot be written (a worker cut off from the database is about to be taken for
dead: what it took now would only be taken back) and takes them again once it can.

Taking over twice is harmless: a restored message is restored once (a Redis transaction
watching the unacked set), a claim is released only while the dead worker holds it, a
send is idempotent (rule 4) and an email claimed twice is sent by one worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from worker import broker, drains
from worker.domain import clock, recovery
from worker.identity import new_worker_id, worker_id
from worker.queues import (
    INTERACTIVE_SEND_QUEUE,
    JOBS_SWEEP_TASK,
    MAIL_QUEUE,
    PRUNE_TASK,
    SEND_QUEUE,
    SEND_TASK,
    SWEEP_TASK,
)
from worker.runtime import Runtime

logger = logging.getLogger(__name__)
PRUNE_INTERVAL_SECONDS = 3600
DELIVERY_MARGIN = timedelta(seconds=2)
# A worker leads the takeover only once its own heartbeats have gone through for this
# many intervals: after a database outage every live worker's lifeline, retrying once an
# interval, has beaten again by then, so nobody is taken for dead for the outage.
LEADER_AFTER_BEATS = 3


def held_task_ids() -> list[str]:
    """The tasks this worker's main process has received and not finished."""
    from celery.worker import state

    for _ in range(5):
        try:  # the consumer changes these sets meanwhile
            requests = [*state.reserved_requests, *state.active_requests]
        except RuntimeError:
            continue
        return sorted({r.id for r in requests})
    return []


class Lifeline(threading.Thread):
    def __init__(self, runtime: Runtime) -> None:
        super().__init__(name="securesend-lifeline", daemon=True)
        self.runtime = runtime
        self.app = runtime.celery
        self.database = runtime.database
        self.settings = runtime.settings
        self.worker_id = worker_id() or new_worker_id()
        self.interval = self.settings.heartbeat_seconds
        self.dead_after = timedelta(seconds=self.settings.worker_dead_after_seconds)
        self._stopping = threading.Event()
        self._beating_since: float | None = None
        self.last_beat = time.monotonic()  # of the last heartbeat written
        self._last_sweeps = 0.0

    def run(self) -> None:
        logger.info("worker %s: heartbeat every %.0fs", self.worker_id, self.interval)
        while not self._stopping.wait(0 if self._beating_since is None else self.interval):
            try:
                self._beat()
            except Exception as e:  # noqa: BLE001 - a database outage: keep trying
                self._beating_since = None
                logger.warning("worker %s: heartbeat failed (%s)", self.worker_id, type(e).__name__)
                self._stopping.wait(self.interval)
                continue
            try:
                self._sweep_if_leader()
            except Exception as e:  # noqa: BLE001 - the next round tries again
                outage = isinstance(e, OperationalError | InterfaceError | RedisError)
                logger.warning(
                    "worker %s: sweep failed (%s)",
                    self.worker_id,
                    type(e).__name__,
                    exc_info=not outage,  # a bug, not an outage: its traceback
                )

    def stop(self) -> None:
        """A clean stop: the heartbeat row says so, and nobody takes this worker over; so
        it gives back the drain flags it holds itself (its drains end with it)."""
        self._stopping.set()
        self.join(timeout=self.interval + 5)
        try:
            drains.release_if_held_by(self.runtime, [self.worker_id])
        except RedisError:
            logger.warning("worker %s: could not release its drain flags", self.worker_id)
        try:
            self.database.run(
                lambda session: recovery.stop(session, worker_id=self.worker_id, now=clock.now())
            )
        except Exception:  # noqa: BLE001 - then it is taken for dead, which is harmless
            logger.warning("worker %s: could not record its stop", self.worker_id)

    def _beat(self) -> None:
        held = held_task_ids()
        buried = self.database.run(
            lambda session: recovery.beat(
                session, worker_id=self.worker_id, held=held, now=clock.now()
            )
        )
        if buried is not None:
            logger.warning(
                "worker %s: taken for dead at %s while it was away (frozen or cut off); what "
                "it held was taken over: the emails and webhook events it had claimed are "
                "dropped as it reaches them, its send tasks end harmlessly (a send happens "
                "once)",
                self.worker_id,
                buried.isoformat(),
                extra={"buried_at": buried.isoformat()},
            )
        self.last_beat = time.monotonic()
        if self._beating_since is None:
            self._beating_since = self.last_beat

    def _sweep_if_leader(self) -> None:
        assert self._beating_since is not None
        if time.monotonic() - self._beating_since < LEADER_AFTER_BEATS * self.interval:
            return
        now = clock.now()
        leader = self.database.run(
            lambda session: recovery.take_lease(
                session,
                name=recovery.SWEEP_LEASE,
                holder=self.worker_id,
                now=now,
                ttl=timedelta(seconds=self.interval * 3),
            )
        )
        if not leader:
            return
        self.take_over(now)
        if time.monotonic() - self._last_sweeps >= self.settings.sweep_interval_seconds:
            self._last_sweeps = time.monotonic()
            self.app.send_task(SWEEP_TASK, queue=MAIL_QUEUE)
            self.app.send_task(JOBS_SWEEP_TASK, queue=INTERACTIVE_SEND_QUEUE)
        if self.database.run(
            lambda session: recovery.take_lease(
                session,
                name=recovery.PRUNE_LEASE,
                holder=self.worker_id,
                now=now,
                ttl=timedelta(seconds=PRUNE_INTERVAL_SECONDS),
                renew=False,
            )
        ):
            self.app.send_task(PRUNE_TASK, queue=SEND_QUEUE)

    def take_over(self, now: datetime) -> None:
        """Take back what dead workers held: their broker messages and email claims."""
        dead_after = self.dead_after
        live, dead = self.database.run(
            lambda session: (
                recovery.live_holdings(session, now=now, dead_after=dead_after),
                recovery.dead_workers(session, now=now, dead_after=dead_after),
            ),
            write=False,
        )
        # Delivered before every live worker's last heartbeat and held by none: received
        # by no live worker (a margin for a message just passed from kombu to Celery).
        since = live.since or now
        cutoff = (since - DELIVERY_MARGIN).timestamp()
        restored = [
            d
            for d in broker.delivered(self.app)
            if d.task_id not in live.held and d.delivered_at < cutoff and (d.eta or 0) < cutoff
        ]
        given_back = set(broker.restore(self.app, [d.tag for d in restored]))
        restored = [d for d in restored if d.tag in given_back]
        if not dead and not restored:
            return
        dead_ids = [w.worker_id for w in dead]
        emails = self.database.run(
            lambda session: recovery.take_back_emails(session, worker_ids=dead_ids, now=now)
        )
        email_ids = [email_id for ids in emails.values() for email_id in ids]
        jobs = [r.task_id for r in restored if r.task_name == SEND_TASK]
        drains.release_if_held_by(self.runtime, dead_ids)
        drains.request_drain(self.runtime)
        buried = self.database.run(
            lambda session: _bury_and_count(
                session, dead_ids, jobs=len(jobs), emails=len(email_ids), now=now
            )
        )
        # A dead worker's last heartbeat names what it held then; what it received after
        # is known only as held by nobody alive: one line names the dead and all of it.
        others = sorted(r.task_id for r in restored if r.task_name != SEND_TASK)
        died = [w for w in dead if w.worker_id in buried]
        logger.warning(
            "%s: took back send jobs %s, other tasks %s and emails %s",
            (
                f"workers {[w.worker_id for w in died]} died (last heartbeats "
                f"{[w.heartbeat_at.isoformat() for w in died]})"
                if died
                else "messages no live worker held"
            ),
            sorted(jobs),
            others,
            email_ids,
            extra={"dead_workers": buried, "jobs": len(jobs), "emails": len(email_ids)},
        )


class Intake:
    """Whether the worker takes new tasks from its queues. It stops once its heartbeat has
    not been written for half of WORKER_DEAD_AFTER_SECONDS (cut off from the database or
    frozen: the others are about to take it for dead and take back what it holds, and a
    task it took now would wait for that) and takes them again at its next heartbeat.
    What it holds already goes on. `check` runs in the consumer's own thread, on its
    timer, as Celery's cancel_consumer and add_consumer commands do."""

    def __init__(self, consumer: Any, lifeline: Lifeline) -> None:
        self.consumer = consumer
        self.lifeline = lifeline
        self.stale_after = lifeline.dead_after.total_seconds() / 2
        self.stopped = False
        self.paused: list[str] = []  # the queues it stopped taking from

    def start(self) -> None:
        self.consumer.timer.call_repeatedly(self.lifeline.interval / 2, self.check)

    def check(self) -> None:
        silent = time.monotonic() - self.lifeline.last_beat
        if silent > self.stale_after and not self.stopped:
            self.stopped, self.paused = True, sorted(self.consumer.app.amqp.queues.consume_from)
            logger.warning(
                "worker %s: no heartbeat written for %.1fs: takes no new tasks from %s",
                self.lifeline.worker_id,
                silent,
                self.paused,
            )
            self._each(self.consumer.cancel_task_queue, self.paused)
        elif silent <= self.stale_after and self.stopped:
            logger.warning(
                "worker %s: heartbeat written again: takes new tasks from %s",
                self.lifeline.worker_id,
                self.paused,
            )
            resumed, self.stopped, self.paused = self.paused, False, []
            self._each(self.consumer.add_task_queue, resumed)

    def _each(self, act: Callable[[str], object], queues: list[str]) -> None:
        for queue in queues:
            try:
                act(queue)
            except Exception as e:  # noqa: BLE001 - the broker connection is restarting:
                # the queue selection is changed already and the new connection follows it
                logger.warning("queue %s: %s (%s)", queue, act.__name__, type(e).__name__)


def _bury_and_count(
    session: Session, dead_ids: list[str], *, jobs: int, emails: int, now: datetime
) -> list[str]:
    recovery.count_takeovers(session, jobs=jobs, emails=emails)
    return recovery.bury(session, worker_ids=dead_ids, now=now)

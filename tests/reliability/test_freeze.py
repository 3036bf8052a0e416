"""A worker frozen (SIGSTOP) for 30 s mid-burst, past WORKER_DEAD_AFTER_SECONDS, with
the shipped settings: the other worker takes over what it held, and when it wakes
(SIGCONT) it finds its holdings gone and drops them: no send twice, no email twice,
nothing lost. What a VM migration, a long GC pause or a stopped container does."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from sqlalchemy import func, select

from tests.reliability.conftest import (
    Fault,
    answered,
    emails_out,
    send_all,
    sent_exactly_once,
)
from worker import broker
from worker.celery_factory import create_app
from worker.models import IS_PENDING, OutboxEmail
from worker.queues import SEND_TASK

SENDS = 300
FROZEN_SECONDS = 30


def _holds(fault: Fault, worker_id: str) -> bool:
    """Whether the worker holds claimed emails and a send it has not acknowledged."""
    with fault.stack.database.read_session() as session:
        claimed = session.scalar(
            select(func.count())
            .select_from(OutboxEmail)
            .where(OutboxEmail.claimed_by == worker_id, IS_PENDING)
        )
    if not claimed:
        return False
    app = create_app(fault.stack.settings)
    return any(d.task_name == SEND_TASK for d in broker.delivered(app))


def _freeze_while_it_holds(fault: Fault, name: str) -> float:
    """SIGSTOP worker `name` at a moment it holds claimed emails and a send, SIGCONT after
    FROZEN_SECONDS; returns when it froze."""
    worker_id = fault.worker_id(name)
    deadline = time.monotonic() + 20
    while True:
        fault.signal_worker(name, signal.SIGSTOP)
        if _holds(fault, worker_id):
            break
        fault.signal_worker(name, signal.SIGCONT)
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} held no claimed emails and send at once for 20 s")
        time.sleep(0.003)
    threading.Timer(FROZEN_SECONDS, fault.signal_worker, args=(name, signal.SIGCONT)).start()
    return time.monotonic()


def test_a_worker_frozen_for_30_s_and_woken_loses_and_doubles_nothing(
    worker_fault: Fault, unique: str
) -> None:
    fault = worker_fault
    world = fault.world(unique)
    reader = world.user("reader")
    guids = fault.drafts(world, reader, SENDS)
    frozen: list[float] = []
    once = threading.Lock()

    def progress(n: int) -> None:
        with once:
            if n < SENDS // 3 or frozen:
                return
            frozen.append(0.0)
        frozen[0] = _freeze_while_it_holds(fault, "worker1")

    responses = send_all(fault, world.token, guids, on_progress=progress)
    figures: dict[str, Any] = answered(fault, world.token, responses)
    sent_exactly_once(fault, world.sender, guids)
    emails_out(fault, guids, reader)
    figures["seconds_from_freeze_to_all_delivered"] = round(time.monotonic() - frozen[0], 1)
    # Everything went out without it; now it wakes, and must not send anything again.
    time.sleep(max(0.0, frozen[0] + FROZEN_SECONDS + 5 - time.monotonic()))
    figures["duplicate_emails"] = emails_out(fault, guids, reader)
    sent_exactly_once(fault, world.sender, guids)
    fault.report("freeze-30s", figures)
    assert figures["duplicate_emails"] == 0
    log = fault.stack.log("worker1")
    assert "taken for dead at" in log  # it knows, and says, that it was taken over
    assert fault.stack.processes["worker1"].poll() is None  # and it goes on serving

"""Breaking things on purpose: a worker killed mid-burst, a graceful worker shutdown
mid-burst, and Redis restarted mid-run. Every request is answered, every send happens
exactly once, and every email goes out; duplicate emails are counted and reported."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx
from sqlalchemy import func, select

from tests.reliability.conftest import Fault, RedisServer, send_all
from worker.models import (
    DailyUsage,
    Delivery,
    EmailStatus,
    Message,
    MessageStatus,
    OutboxEmail,
    SendJob,
    User,
)

SENDS = 300


def _answered(fault: Fault, token: str, responses: list[httpx.Response]) -> dict[str, int]:
    """Every request got an answer: 200 now, or 202 and its job finishes later."""
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 202}, statuses
    accepted = [r.json()["jobId"] for r in responses if r.status_code == 202]
    finished = fault.wait_for_jobs(token, accepted, timeout=90)
    assert len(finished) == len(accepted), "some accepted jobs never finished"
    assert {j["httpStatus"] for j in finished.values()} <= {200}
    return {"answered_200": statuses[200], "answered_202": statuses[202]}


def _sent_exactly_once(fault: Fault, sender: str, guids: list[str]) -> None:
    with fault.stack.database.read_session() as session:
        ids = list(
            session.scalars(
                select(Message.id).where(
                    Message.guid.in_(guids), Message.status == MessageStatus.SENT
                )
            )
        )
        assert len(ids) == len(guids), "a send was lost"
        deliveries = session.execute(
            select(Delivery.message_id, func.count())
            .where(Delivery.message_id.in_(ids))
            .group_by(Delivery.message_id)
        ).all()
        assert len(deliveries) == len(guids) and {n for _, n in deliveries} == {1}
        emails = session.scalar(select(func.count()).where(OutboxEmail.message_id.in_(ids)))
        assert emails == len(guids)
        sender_id = session.scalars(select(User.id).where(User.email == sender)).one()
        usage = session.scalars(select(DailyUsage).where(DailyUsage.user_id == sender_id)).one()
        assert usage.messages_sent == len(guids)  # quota used once per send
        failed_jobs = session.scalar(
            select(func.count()).where(SendJob.message_guid.in_(guids), SendJob.http_status != 200)
        )
        assert failed_jobs == 0


def _emails_out(fault: Fault, guids: list[str], reader: str, timeout: float = 90) -> int:
    """Wait until every email is sent; returns how many arrived more than once."""
    deadline = time.monotonic() + timeout
    while True:
        with fault.stack.database.read_session() as session:
            pending = session.execute(
                select(
                    OutboxEmail.id,
                    OutboxEmail.status,
                    OutboxEmail.attempts,
                    OutboxEmail.claimed_until,
                    OutboxEmail.last_error,
                )
                .join(Message, Message.id == OutboxEmail.message_id)
                .where(Message.guid.in_(guids), OutboxEmail.status != EmailStatus.SENT)
            ).all()
        if not pending:
            break
        assert time.monotonic() < deadline, f"emails that never went out: {pending}"
        time.sleep(0.25)
    received = Counter(r.message["Message-ID"] for r in fault.sink.to(reader))
    assert len(received) == len(guids), "an email was lost"
    return sum(n - 1 for n in received.values())


def _burst(fault: Fault, tag: str, *, break_at: int, action: Any) -> dict[str, Any]:
    world = fault.world(tag)
    reader = world.user("reader")
    guids = fault.drafts(world, reader, SENDS)
    fired = threading.Event()

    def progress(n: int) -> None:
        if n >= break_at and not fired.is_set():
            fired.set()
            action()

    started = time.monotonic()
    responses = send_all(fault, world.token, guids, on_progress=progress)
    figures: dict[str, Any] = _answered(fault, world.token, responses)
    _sent_exactly_once(fault, world.sender, guids)
    figures["duplicate_emails"] = _emails_out(fault, guids, reader)
    figures["sends"] = SENDS
    figures["seconds_to_all_delivered"] = round(time.monotonic() - started, 1)
    assert fired.is_set()
    return figures


def test_kill_9_one_of_two_workers_a_third_of_the_way_in(worker_fault: Fault, unique: str) -> None:
    figures = _burst(
        worker_fault,
        unique,
        break_at=SENDS // 3,
        action=lambda: worker_fault.kill_worker("worker1"),
    )
    worker_fault.report("kill-9-worker", figures)
    # Each of the killed worker's two processes can lose the record of one email it had
    # just handed to the server: at-least-once, recognisable by Message-ID.
    assert figures["duplicate_emails"] <= 2


def test_sigterm_mid_burst_loses_nothing(worker_fault: Fault, unique: str) -> None:
    figures = _burst(
        worker_fault,
        unique,
        break_at=SENDS // 3,
        action=lambda: worker_fault.stop_worker("worker1"),
    )
    process = worker_fault.stack.processes["worker1"]
    assert process.wait(30) == 0  # a warm shutdown exits cleanly, within the soft window
    worker_fault.report("sigterm-worker", figures)
    assert figures["duplicate_emails"] == 0


def test_redis_restart_mid_run_recovers_by_itself(
    redis_fault: tuple[Fault, RedisServer], unique: str
) -> None:
    fault, server = redis_fault

    def restart() -> None:
        server.kill()  # no persistence: whatever was queued in Redis is gone
        time.sleep(2)
        server.start()

    figures = _burst(
        fault,
        unique,
        break_at=SENDS // 3,
        action=lambda: threading.Thread(target=restart, daemon=True).start(),
    )
    fault.report("redis-restart", figures)
    assert figures["duplicate_emails"] <= 2

"""Lanes through a live worker (docs/design.md, "Lanes"): a send someone waits for is not
kept behind a backlog of bulk sends, and a flood of interactive sends does not stop the
bulk lane. Order is read from the job rows (which send a worker started first), never from
the wall clock, so a busy machine cannot make these fail."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from tests.support import Stack
from worker.celery_factory import create_app
from worker.client import build_send_job, send_job_options
from worker.lanes import BULK_EVERY
from worker.models import (
    JobStatus,
    Lane,
    Message,
    MessageStatus,
    Recipient,
    RecipientKind,
    SendJob,
    User,
)
from worker.payloads import Priority
from worker.queues import SEND_TASK

BACKLOG = 200
FINISH_TIMEOUT_SECONDS = 180.0


def _drafts(stack: Stack, sender: str, reader: str, count: int) -> tuple[str, list[str]]:
    """`count` drafts of `sender` to `reader`, written straight into the database (a
    backlog through HTTP would take longer than the test); the sender's GUID and theirs."""
    with stack.database.write_session() as session:
        user = session.scalars(select(User).where(User.email == sender)).one()
        drafts = [
            Message(
                sender_id=user.id,
                status=MessageStatus.DRAFT,
                subject=f"batch {i}",
                body="b",
                recipients=[Recipient(kind=RecipientKind.TO, position=0, address=reader)],
            )
            for i in range(count)
        ]
        session.add_all(drafts)
        session.flush()
        return user.guid, [m.guid for m in drafts]


def _enqueue(stack: Stack, sender_guid: str, guids: list[str], priority: Priority) -> list[str]:
    """Publish a send of each draft as another service does (worker.client); job ids."""
    publisher = create_app(stack.settings, results=False)
    job_ids = []
    for guid in guids:
        payload = build_send_job(
            sender_guid=sender_guid,
            message_guid=guid,
            send_email_notification=False,
            secret_key=stack.settings.secret_key,
            priority=priority,
        )
        publisher.send_task(SEND_TASK, args=[payload], **send_job_options(payload))
        job_ids.append(payload["jobId"])
    return job_ids


def _finished_jobs(stack: Stack, job_ids: list[str]) -> list[Any]:
    """The job rows of `job_ids` once every one has finished, in the order they started."""
    deadline = time.monotonic() + FINISH_TIMEOUT_SECONDS
    while True:
        with stack.database.read_session() as session:
            jobs = session.execute(
                select(SendJob.id, SendJob.lane, SendJob.status, SendJob.started_at)
                .where(SendJob.id.in_(job_ids))
                .order_by(SendJob.started_at)
            ).all()
        done = [j for j in jobs if j.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)]
        if len(done) == len(job_ids):
            assert all(j.status is JobStatus.SUCCEEDED for j in done), _codes(stack, job_ids)
            return list(jobs)
        assert time.monotonic() < deadline, f"{len(done)} of {len(job_ids)} jobs finished"
        time.sleep(0.2)


def _codes(stack: Stack, job_ids: list[str]) -> dict[str, int]:
    with stack.database.read_session() as session:
        counted = session.execute(
            select(SendJob.result_code, func.count())
            .where(SendJob.id.in_(job_ids))
            .group_by(SendJob.result_code)
        )
        return {str(code): int(n) for code, n in counted}


def _sender_and_reader(stack: Stack, unique: str) -> tuple[str, str, str]:
    """A sender whose group's daily limit leaves room for the backlogs, their password,
    and a reader."""
    group = stack.make_group(unique, dailyMessages=10 * BACKLOG)
    sender, password = stack.make_user(unique, group=group)
    reader, _ = stack.make_user(unique, name="reader", group=group)
    return sender, password, reader


def test_a_person_is_answered_before_a_backlog_of_bulk_sends(stack: Stack, unique: str) -> None:
    sender, password, reader = _sender_and_reader(stack, unique)
    token = stack.login(sender, password)
    sender_guid, guids = _drafts(stack, sender, reader, BACKLOG + 1)
    bulk = _enqueue(stack, sender_guid, guids[:BACKLOG], "bulk")

    answer = stack.send(token, guids[-1])  # a person presses Send: synchronous HTTP
    assert answer.status_code == 200, answer.text
    assert answer.json()["notificationSent"] is True

    with stack.database.read_session() as session:
        mine = session.execute(
            select(SendJob.id, SendJob.lane, SendJob.created_at, SendJob.started_at).where(
                SendJob.message_guid == guids[-1]
            )
        ).one()
    started = _finished_jobs(stack, [*bulk, mine.id])
    # What it waited behind once queued: the bulk sends a worker started after its job
    # row was written and before it started it. A worker holds no message beyond those
    # its pool processes run (acks_late, prefetch multiplier 1): on Redis at most one per
    # process (concurrency 2) slips in, started while the job was being published. The
    # embedded broker is coarser: its worker finds the message at its next poll of the
    # folder (every 20 ms), and bulk sends start meanwhile (3 were seen here).
    jumped = [j for j in started if j.id != mine.id and mine.created_at < j.started_at]
    jumped = [j for j in jumped if j.started_at < mine.started_at]
    print(f"{stack.config.name}: {len(jumped)} bulk sends started while it was queued")
    assert len(jumped) <= (2 if stack.settings.uses_redis else 8)
    assert mine.lane == Lane.INTERACTIVE
    assert {job.lane for job in started if job.id != mine.id} == {Lane.BULK}
    # Without lanes it would have started after every bulk send published before it (or
    # one, on the other pool process); with them, the next free process takes it.
    position = [job.id for job in started].index(mine.id)
    bulk_after = len(started) - 1 - position
    print(f"{stack.config.name}: the interactive send started before {bulk_after} of {BACKLOG}")
    assert bulk_after >= 10, f"started after {position} of {BACKLOG} bulk sends"


def test_a_flood_of_interactive_sends_leaves_bulk_its_share(stack: Stack, unique: str) -> None:
    sender, _, reader = _sender_and_reader(stack, unique)
    sender_guid, guids = _drafts(stack, sender, reader, 2 * BACKLOG)
    interactive = _enqueue(stack, sender_guid, guids[:BACKLOG], "interactive")
    bulk = _enqueue(stack, sender_guid, guids[BACKLOG:], "bulk")

    started = _finished_jobs(stack, [*interactive, *bulk])
    # While interactive sends kept arriving (up to the last one's start), the bulk lane
    # kept one start in BULK_EVERY; strict priority would have left it none.
    last_interactive = max(i for i, job in enumerate(started) if job.lane == Lane.INTERACTIVE)
    first_bulk = min(i for i, job in enumerate(started) if job.lane == Lane.BULK)
    contested = started[first_bulk : last_interactive + 1]
    share = sum(job.lane == Lane.BULK for job in contested) / len(contested)
    print(f"{stack.config.name}: bulk took {share:.0%} of {len(contested)} contested starts")
    assert len(contested) >= BACKLOG // 2
    assert 0.5 / BULK_EVERY <= share <= 2 / BULK_EVERY

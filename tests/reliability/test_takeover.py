"""Several live workers take over one dead worker at the same moment: each of its broker
messages goes back to its queue once, each of its emails is released once, it is buried
once, and the counters count each once; what a live worker holds is left alone."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from tests.reliability.conftest import RedisServer
from tests.support import create_postgres_database, drop_postgres_database
from tests.worker import rows
from worker import broker
from worker.celery_factory import create_app
from worker.db import Database
from worker.domain import clock, recovery
from worker.lifeline import Lifeline
from worker.migrate import upgrade_to_head
from worker.models import EmailStatus, MetricTotal, OutboxEmail, WorkerHeartbeat
from worker.queues import SEND_QUEUE, SEND_TASK
from worker.runtime import Runtime
from worker.settings import Settings

MESSAGES = 12
EMAILS = 8
LIFELINES = 3

# A consumer that takes messages and dies without acknowledging them (kill -9 alike):
# they stay in Redis's unacked set, as a dead worker's do.
TAKE_AND_DIE = """
import os, sys
from kombu import Connection
with Connection(sys.argv[1]) as connection:
    queue = connection.SimpleQueue(sys.argv[2])
    for _ in range(int(sys.argv[3])):
        queue.get(block=True, timeout=10)
    os._exit(0)
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Settings, Database, RedisServer]]:
    server = RedisServer(tmp_path)
    server.start()
    url = create_postgres_database()
    settings = Settings(database_url=url, redis_url=server.url, var_dir=tmp_path)
    upgrade_to_head(settings)
    database = Database(url, pool_size=5)
    try:
        yield settings, database, server
    finally:
        database.dispose()
        drop_postgres_database(url)
        server.kill()


def test_lifelines_taking_over_at_once_take_each_thing_once(
    world: tuple[Settings, Database, RedisServer],
) -> None:
    settings, database, server = world
    app = create_app(settings)
    task_ids = [app.send_task(SEND_TASK, args=[{}], queue=SEND_QUEUE).id for _ in range(MESSAGES)]
    subprocess.run(
        [sys.executable, "-c", TAKE_AND_DIE, server.url, SEND_QUEUE, str(MESSAGES)],
        check=True,
        timeout=60,
    )
    delivered = broker.delivered(app)
    assert sorted(d.task_id for d in delivered) == sorted(task_ids)

    now = clock.now()
    with database.write_session() as session:
        sender = rows.sender(session)
        emails = [rows.email(now, EmailStatus.QUEUED, attempts=1) for _ in range(EMAILS)]
        for email in emails:
            email.claimed_by, email.claimed_until = "dead-worker", now + timedelta(minutes=3)
        delivered_email = rows.email(now, EmailStatus.SENT, attempts=1)
        delivered_email.claimed_by = "dead-worker"
        session.add_all([*emails, delivered_email])
        session.flush()
        recovery.beat(session, worker_id="dead-worker", held=task_ids[:3], now=now)
        # A live worker received the last message: it is not the dead one's to take.
        recovery.beat(session, worker_id="live-worker", held=[task_ids[-1]], now=now)
        del sender
    later = now + timedelta(seconds=settings.worker_dead_after_seconds + 5)
    with database.write_session() as session:  # the live one keeps beating
        recovery.beat(session, worker_id="live-worker", held=[task_ids[-1]], now=later)

    runtime = Runtime.build(settings, celery=app)
    lifelines = [Lifeline(runtime) for _ in range(LIFELINES)]
    start = threading.Barrier(LIFELINES)
    errors: list[BaseException] = []

    def take_over(lifeline: Lifeline) -> None:
        start.wait()
        try:
            lifeline.take_over(later)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=take_over, args=(lifeline,)) for lifeline in lifelines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    runtime.close()
    assert errors == []

    client = redis.Redis.from_url(server.url)
    queued = [broker.headers_of(raw)["id"] for raw in client.lrange(SEND_QUEUE, 0, -1)]
    assert Counter(queued) == Counter(task_ids[:-1])  # each restored once
    assert [d.task_id for d in broker.delivered(app)] == [task_ids[-1]]  # the live one's
    with database.read_session() as session:
        released = session.scalars(
            select(OutboxEmail.id).where(
                OutboxEmail.claimed_by.is_(None), OutboxEmail.status == EmailStatus.QUEUED
            )
        ).all()
        untouched = session.get_one(OutboxEmail, delivered_email.id)
        buried = session.scalars(
            select(WorkerHeartbeat.id).where(WorkerHeartbeat.buried_at.is_not(None))
        ).all()
        counted = dict(
            session.execute(
                select(MetricTotal.label, MetricTotal.value).where(
                    MetricTotal.name == recovery.TAKEOVERS
                )
            ).all()
        )
    assert sorted(released) == sorted(e.id for e in emails)
    assert untouched.claimed_by == "dead-worker"  # delivered: nothing to take back
    assert buried == ["dead-worker"]
    assert counted == {"jobs": MESSAGES - 1, "emails": EMAILS}

"""PostgreSQL stopped for three seconds in the middle of a burst of sends, with the
settings that ship: every request is answered (503 with Retry-After while the database is
away, never a 500 and never a connection closed without an answer), /readyz says so, a
send answered 503 was not performed and is performed once when sent again, a send queued
before the outage completes after it, and nobody is taken for dead."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from tests.reliability.conftest import (
    Fault,
    PostgresServer,
    emails_out,
    send_one,
    sent_exactly_once,
)
from worker.models import Message, MessageStatus, WorkerHeartbeat

SENDS = 300
OUTAGE_SECONDS = 3


@dataclass
class Answer:
    guid: str
    status: int
    body: dict[str, Any]
    retry_after: str | None
    at: float  # time.monotonic() when answered


def _send(fault: Fault, token: str, guid: str) -> Answer:
    response = send_one(fault, token, guid)
    return Answer(
        guid,
        response.status_code,
        response.json(),
        response.headers.get("retry-after"),
        time.monotonic(),
    )


def test_postgresql_stopped_for_three_seconds_mid_burst(
    database_fault: tuple[Fault, PostgresServer], unique: str
) -> None:
    fault, server = database_fault
    world = fault.world(unique)
    reader = world.user("reader")
    guids = fault.drafts(world, reader, SENDS)
    outage: dict[str, Any] = {}

    def stop_and_start() -> None:
        server.stop()
        outage["stopped"] = time.monotonic()
        outage["ready"] = httpx.get(fault.stack.url("/readyz"), timeout=10)
        time.sleep(OUTAGE_SECONDS)
        server.start()
        outage["started"] = time.monotonic()

    done = Counter[str]()
    counting = threading.Lock()
    restarter = threading.Thread(target=stop_and_start)

    def send(guid: str) -> Answer:
        answer = _send(fault, world.token, guid)
        with counting:  # from every sending thread: the break happens once
            done["n"] += 1
            if done["n"] == SENDS // 3:
                restarter.start()
        return answer

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(send, guids))  # a dropped connection raises here
    restarter.join(60)
    fault.stack.database.dispose()  # the test's own connections died with the server

    statuses = Counter(a.status for a in answers)
    refused = [a for a in answers if a.status == 503]
    assert set(statuses) <= {200, 202, 503}, statuses
    assert refused, "the outage was not noticed"
    for answer in refused:
        assert answer.body["responseStatus"]["errorCode"] == "ServiceUnavailable"
        assert answer.retry_after is not None and int(answer.retry_after) > 0
    assert outage["ready"].status_code == 503
    assert outage["ready"].json()["checks"]["database"].startswith("unavailable")

    # 202: queued before or during the outage; it completes after it.
    accepted = [a.body["jobId"] for a in answers if a.status == 202]
    finished = fault.wait_for_jobs(world.token, accepted, timeout=120)
    assert len(finished) == len(accepted)
    assert {j["httpStatus"] for j in finished.values()} <= {200}
    # 503: not performed; sending again sends it once.
    with fault.stack.database.read_session() as session:
        still_drafts = set(
            session.scalars(
                select(Message.guid).where(
                    Message.guid.in_([a.guid for a in refused]),
                    Message.status == MessageStatus.DRAFT,
                )
            )
        )
    assert still_drafts == {a.guid for a in refused}
    again = [_send(fault, world.token, a.guid) for a in refused]
    assert {a.status for a in again} == {200}
    sent_exactly_once(fault, world.sender, guids)
    duplicates = emails_out(fault, guids, reader)
    all_final = time.monotonic()

    with fault.stack.database.read_session() as session:
        buried = session.scalars(
            select(WorkerHeartbeat.id).where(WorkerHeartbeat.buried_at.is_not(None))
        ).all()
    assert buried == []  # an outage is nobody's death
    after_restart = [a.at for a in answers if a.status == 200 and a.at > outage["started"]]
    fault.report(
        "postgres-restart",
        {
            "sends": SENDS,
            "outage_seconds": round(outage["started"] - outage["stopped"], 1),
            "answered": dict(statuses),
            "first_200_after_restart_s": (
                round(min(after_restart) - outage["started"], 2) if after_restart else None
            ),
            "all_final_and_delivered_after_restart_s": round(all_final - outage["started"], 1),
            "duplicate_emails": duplicates,
        },
    )
    assert duplicates == 0

"""Delivery at the relay's pace through live workers, with the shipped defaults (retries
of 30 s and more: an email a throttle or a dead relay turned into a retry would miss the
tests' deadlines): a relay that throttles, and a first relay that dies mid-burst and comes
back. On the embedded default (the pace in a file) and on PostgreSQL + Redis (the pace and
the breaker in Redis). Counts and orders are asserted; how long recovery took is printed."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.smtp_sink import SmtpSink, ThrottlingSink
from tests.support import (
    REDIS_TEST_URL,
    Stack,
    StackConfig,
    create_postgres_database,
    drop_postgres_database,
    flush_redis,
    free_port,
)
from tests.worker import rows
from worker.celery_factory import create_app
from worker.domain import pace
from worker.models import EmailStatus, OutboxEmail
from worker.queues import DRAIN_TASK, MAIL_QUEUE

# A Redis database of these stacks' own: the session's PostgreSQL stack has REDIS_TEST_URL's.
PACE_REDIS_URL = REDIS_TEST_URL.rpartition("/")[0] + "/14"
DELIVERED_WITHIN_SECONDS = 120.0


class Relays:
    """The stack's two relays: a first that throttles beyond 10 emails/s and can be
    killed and brought back on its port, and a second."""

    def __init__(self) -> None:
        self.first_port = free_port()
        self.first: ThrottlingSink | None = None
        self.second = SmtpSink(free_port())

    def start_first(self) -> ThrottlingSink:
        self.first = ThrottlingSink(self.first_port, per_second=10)
        self.first.start()
        return self.first

    def kill_first(self) -> None:
        assert self.first is not None
        self.first.stop()

    @property
    def smtp_url(self) -> str:
        return f"smtp://127.0.0.1:{self.first_port},{self.second.url}"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def paced(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Relays]]:
    """A stack delivering to `Relays`, no limit set, every other setting shipped."""
    relays = Relays()
    relays.start_first()
    relays.second.start()
    database_url = ""
    if request.param == "postgres":
        flush_redis(PACE_REDIS_URL)
        database_url = create_postgres_database()
    config = StackConfig(
        name=f"pace-{request.param}",
        database_url=database_url,
        redis_url=PACE_REDIS_URL if database_url else "",
        env={"SMTP_URL": relays.smtp_url},
    )
    stack = Stack.start(config, var_dir=tmp_path_factory.mktemp("pace"), api_port=free_port())
    try:
        yield stack, relays
    finally:
        stack.stop()
        relays.second.stop()
        if relays.first is not None:
            relays.first.stop()
        if database_url:
            drop_postgres_database(database_url)
            flush_redis(PACE_REDIS_URL)


def _queue(stack: Stack, count: int, tag: str) -> list[int]:
    """`count` notifications in the outbox, and a drain asked for, as a burst of sends
    leaves them; their ids."""
    recipients = [f"{tag}-{i}@example.test" for i in range(count)]
    ids = rows.due_notifications(stack.database, stack.keys, recipients)
    create_app(stack.settings, results=False).send_task(DRAIN_TASK, queue=MAIL_QUEUE)
    return ids


def _all_sent(stack: Stack, ids: list[int]) -> list[OutboxEmail]:
    deadline = time.monotonic() + DELIVERED_WITHIN_SECONDS
    while True:
        sent = list(rows.outbox_rows(stack.database, ids).values())
        if all(r.status is EmailStatus.SENT for r in sent):
            return sent
        assert time.monotonic() < deadline, Counter(
            (r.status.value, r.last_error) for r in sent
        ).most_common(5)
        time.sleep(0.2)


def _arrived(*sinks: SmtpSink, tag: str) -> Counter[str]:
    """Message-IDs of the emails tagged `tag` that arrived at any of `sinks`, counted."""
    return Counter(
        str(r.message["Message-ID"])
        for sink in sinks
        for r in sink.received()
        if r.recipients[0].startswith(f"{tag}-")
    )


def _metrics(stack: Stack) -> str:
    return httpx.get(stack.url("/metrics"), timeout=30).text


def test_a_throttling_relay_gets_every_email_once_and_fails_none(
    paced: tuple[Stack, Relays], unique: str
) -> None:
    stack, relays = paced
    first = relays.first
    assert first is not None
    refused_before = first.refused
    started = time.monotonic()
    ids = _queue(stack, 60, unique)

    sent = _all_sent(stack, ids)

    print(f"60 emails through a relay of 10/s: {time.monotonic() - started:.1f} s")
    assert {r.attempts for r in sent} == {1}, "a throttle reply was counted as an attempt"
    arrived = _arrived(first, relays.second, tag=unique)
    assert len(arrived) == 60 and set(arrived.values()) == {1}
    assert first.refused > refused_before, "the relay never throttled: the test proves nothing"
    assert not _arrived(relays.second, tag=unique), "a throttle is not a dead relay"
    text = _metrics(stack)
    assert 'securesend_mail_relay_emails_total{event="throttled",host="127.0.0.1:' in text
    assert 'securesend_mail_pace{key="relay:0"}' in text


def test_a_dead_first_relay_is_passed_over_and_returned_to_when_back(
    paced: tuple[Stack, Relays], unique: str, request: pytest.FixtureRequest
) -> None:
    stack, relays = paced
    first = relays.first
    assert first is not None
    ids = _queue(stack, 40, unique)
    while not _arrived(first, tag=unique):
        time.sleep(0.01)
    relays.kill_first()  # mid-burst
    killed = time.monotonic()

    sent = _all_sent(stack, ids)

    print(f"the first relay killed: every email delivered {time.monotonic() - killed:.1f} s after")
    through_first, through_second = _arrived(first, tag=unique), _arrived(relays.second, tag=unique)
    assert through_second, "nothing went through the second relay"
    assert len(through_first + through_second) == 40
    assert set((through_first + through_second).values()) == {1}, "an email went out twice"
    assert {r.attempts for r in sent} == {1}, "passing a dead relay over cost an attempt"
    assert "securesend_mail_active_relay 1.0" in _metrics(stack)

    if request.node.callspec.params["paced"] == "sqlite":
        return  # the return, timed by the breaker's cool-down: once, with Redis
    back = relays.start_first()
    restarted = time.monotonic()
    probes: list[int] = []
    while not _arrived(back, tag=f"{unique}-back"):
        assert time.monotonic() - restarted < pace.OPEN_SECONDS + 30, "never returned"
        probes += _queue(stack, 1, f"{unique}-back")
        time.sleep(1.0)
    print(f"the first relay back: used again {time.monotonic() - restarted:.1f} s after")
    _all_sent(stack, probes)
    assert "securesend_mail_active_relay 0.0" in _metrics(stack)
    later = _queue(stack, 5, f"{unique}-later")
    _all_sent(stack, later)
    assert len(_arrived(back, tag=f"{unique}-later")) == 5
    assert not _arrived(relays.second, tag=f"{unique}-later")

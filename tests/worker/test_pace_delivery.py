"""Delivery at the relay's pace (worker.domain.pace), drained in this process against real
SMTP servers that keep quotas of their own (tests.smtp_sink.ThrottlingSink): on
PostgreSQL with the pace in Redis, and on SQLite with it in the embedded default's file.
What is asserted is counts and orders (who was sent, refused, deferred, through which
relay), never how long something took; the benchmark times it (bench/pace.py)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.smtp_sink import THROTTLING_REPLY, SmtpSink, ThrottlingSink
from tests.support import free_port, redis_pace_store
from tests.worker import rows
from worker.cli import email_line
from worker.db import Database
from worker.domain import clock, delivery
from worker.domain.delivery import Delivery, DeliveryReport
from worker.domain.pace import DRAIN_SLEEP_SECONDS, RATE_MARGIN, PaceStore, Pacing
from worker.domain.secrets import Keys
from worker.models import EmailStatus
from worker.pacing import FilePaceStore
from worker.settings import Settings
from worker.transports import make_relays

DONE_WITHIN_SECONDS = 60.0


@pytest.fixture
def pace_store(
    module_database: tuple[Settings, Database], tmp_path: Path, unique: str
) -> Iterator[PaceStore]:
    """Where a deployment on this database keeps its pace: Redis beside PostgreSQL (under
    a prefix of the test's own), the file of the embedded default beside SQLite."""
    _settings, database = module_database
    if database.engine.dialect.name == "sqlite":
        yield FilePaceStore(tmp_path)
        return
    with redis_pace_store(unique) as store:
        yield store


def _deliver_all(
    database: Database,
    settings: Settings,
    pacing: Pacing,
    ids: list[int],
    *,
    stop_after: int | None = None,
) -> list[DeliveryReport]:
    """Drain as the workers do (a drain, then the next when the soonest email is due)
    until every email of `ids` is final, or `stop_after` drains; the reports of each."""
    relays = Delivery(make_relays(settings), pacing)
    reports = []
    deadline = time.monotonic() + DONE_WITHIN_SECONDS
    try:
        while True:
            report = delivery.drain(
                database,
                relays,
                keys=Keys(settings.secret_key),
                settings=settings,
                now=clock.now,
                budget_seconds=settings.mail_task_time_limit_seconds / 2,
            )
            reports.append(report)
            if len(reports) == stop_after:
                return reports
            latest = rows.outbox_rows(database, ids).values()
            if all(r.status in (EmailStatus.SENT, EmailStatus.FAILED) for r in latest):
                return reports
            assert time.monotonic() < deadline, Counter(r.status for r in latest)
            # When the workers' next drain would start (worker.drains.sweep asks the same).
            with database.read_session() as session:
                wait = delivery.next_due_in(session, now=clock.now())
            time.sleep(min(wait or 0.05, 1.0))
    finally:
        for relay in relays.relays:
            relay.close()


def _message_ids(sink: SmtpSink) -> Counter[str]:
    return Counter(str(r.message["Message-ID"]) for r in sink.received())


def test_a_throttled_email_is_deferred_unattempted_and_every_email_goes_once(
    module_database: tuple[Settings, Database], pace_store: PaceStore, unique: str
) -> None:
    """No limit set: the relay's refusals alone set the pace; none fails for them."""
    _, database = module_database
    with ThrottlingSink.running(free_port(), per_second=10) as sink:
        settings = Settings(smtp_url=sink.url)
        pacing = Pacing(pace_store, settings.pace_limits)
        ids = rows.due_notifications(
            database, Keys(settings.secret_key), [f"r{i}-{unique}@fast.test" for i in range(16)]
        )

        reports = _deliver_all(database, settings, pacing, ids)

        found = rows.outbox_rows(database, ids)
        assert {r.status for r in found.values()} == {EmailStatus.SENT}
        # A refusal to slow down is not an attempt: each email was attempted once.
        assert {r.attempts for r in found.values()} == {1}
        assert sink.refused >= 1, "the relay never throttled: the test proves nothing"
        assert set(_message_ids(sink).values()) == {1} and len(_message_ids(sink)) == 16
        assert sum(len(r.deferred) for r in reports) >= sink.refused
        counts = pace_store.snapshot(1).counts
        assert counts["relay:0:throttled"] == sink.refused
        assert counts["relay:0:sent"] == 16
        assert "relay:0" in pace_store.throttled_keys()


def test_a_deferred_email_says_why_and_keeps_its_attempts(
    module_database: tuple[Settings, Database], pace_store: PaceStore, unique: str
) -> None:
    _, database = module_database
    with ThrottlingSink.running(free_port(), per_second=1000) as sink:
        settings = Settings(smtp_url=sink.url)
        keys = Keys(settings.secret_key)
        [email_id] = rows.due_notifications(database, keys, [f"once-{unique}@fast.test"])
        sink.refuse(f"once-{unique}@fast.test", THROTTLING_REPLY)
        pacing = Pacing(pace_store, settings.pace_limits)
        relays = Delivery(make_relays(settings), pacing)
        report = delivery.drain(
            database, relays, keys=keys, settings=settings, now=clock.now, budget_seconds=30
        )
        relays.relays[0].close()

        assert list(report.deferred) == [email_id] and not report.retry_in and not report.failed
        row = rows.outbox_rows(database, [email_id])[email_id]
        assert (row.status, row.attempts, row.last_error) == (
            EmailStatus.DEFERRED,
            0,
            THROTTLING_REPLY,
        )
        assert row.next_attempt_at > clock.now() and row.claimed_by is None

        # Due again once the pace allows, it goes, on its first attempt.
        _deliver_all(database, settings, pacing, [email_id])
        row = rows.outbox_rows(database, [email_id])[email_id]
        assert (row.status, row.attempts) == (EmailStatus.SENT, 1)
        assert len(sink.to(f"once-{unique}@fast.test")) == 1


def test_with_the_relays_rate_set_the_relay_refuses_next_to_nothing(
    module_database: tuple[Settings, Database], pace_store: PaceStore, unique: str
) -> None:
    _, database = module_database
    with ThrottlingSink.running(free_port(), per_second=10) as sink:
        settings = Settings(smtp_url=sink.url, mail_rate_limit="10/s")
        pacing = Pacing(pace_store, settings.pace_limits)
        ids = rows.due_notifications(
            database, Keys(settings.secret_key), [f"r{i}-{unique}@fast.test" for i in range(25)]
        )

        _deliver_all(database, settings, pacing, ids)

        assert {r.status for r in rows.outbox_rows(database, ids).values()} == {EmailStatus.SENT}
        assert len(_message_ids(sink)) == 25 and set(_message_ids(sink).values()) == {1}
        # Spaced a slot apart below the quota, none is refused unless the machine stalls
        # one hand-over for more than the margin (docs/design.md, "Pace").
        assert sink.refused <= 1


def test_a_slow_domain_does_not_hold_up_the_others(
    module_database: tuple[Settings, Database], pace_store: PaceStore, unique: str
) -> None:
    _, database = module_database
    with ThrottlingSink.running(free_port(), per_second=1000) as sink:
        settings = Settings(smtp_url=sink.url, mail_domain_rate_limits="slow.test=2/s")
        sink.domain_rates["slow.test"] = 2  # the receiving side's quota, the one set
        pacing = Pacing(pace_store, settings.pace_limits)
        # Interleaved: slow, fast, slow, fast, … in the order they are claimed.
        recipients = [f"{i}-{unique}@{('slow', 'fast')[i % 2]}.test" for i in range(16)]
        ids = rows.due_notifications(database, Keys(settings.secret_key), recipients)

        # The first drain sent every fast.test email, and held slow.test ones back.
        [first] = _deliver_all(database, settings, pacing, ids, stop_after=1)
        fast = {i for i, r in zip(ids, recipients, strict=True) if r.endswith("@fast.test")}
        assert fast <= set(first.sent)
        assert first.deferred, "slow.test was never held: the test proves nothing"

        reports = _deliver_all(database, settings, pacing, ids)

        assert not fast & {i for report in reports for i in report.deferred}
        arrivals = Counter(r.recipients[0].rpartition("@")[2] for r in sink.received())
        assert arrivals == {"slow.test": 8, "fast.test": 8}
        # Spaced a slot apart, slow.test stayed within its quota of 2 in any second
        # (one refusal allowed: a hand-over stalled past the margin on a busy machine).
        assert sink.refused <= 1
        assert {r.attempts for r in rows.outbox_rows(database, ids).values()} == {1}


def test_an_unreachable_relay_is_passed_over_for_the_next_one(
    module_database: tuple[Settings, Database], pace_store: PaceStore, unique: str
) -> None:
    _, database = module_database
    down = free_port()  # nothing listens there
    with SmtpSink.running(free_port()) as second:
        settings = Settings(smtp_url=f"smtp://127.0.0.1:{down},{second.url}")
        pacing = Pacing(pace_store, settings.pace_limits, relay_count=2)
        ids = rows.due_notifications(
            database, Keys(settings.secret_key), [f"r{i}-{unique}@fast.test" for i in range(8)]
        )

        _deliver_all(database, settings, pacing, ids)

        found = rows.outbox_rows(database, ids)
        assert {r.status for r in found.values()} == {EmailStatus.SENT}
        assert {r.attempts for r in found.values()} == {1}  # passed over within the attempt
        assert len(_message_ids(second)) == 8 and set(_message_ids(second).values()) == {1}
        first_relay, second_relay = pace_store.relays(2)
        assert first_relay.open and not second_relay.open


def test_a_paced_drain_sleeps_a_second_at_most_then_sends_its_batch_back(
    module_database: tuple[Settings, Database], pace_store: PaceStore, unique: str
) -> None:
    """At 1/s a drain sleeps for a slot or none (a second at most in all), then puts the
    rest of its batch back, deferred, due a slot apart, and ends."""
    _, database = module_database
    with ThrottlingSink.running(free_port(), per_second=1000) as sink:
        settings = Settings(smtp_url=sink.url, mail_rate_limit="1/s")
        pacing = Pacing(pace_store, settings.pace_limits)
        recipients = [f"r{i}-{unique}@fast.test" for i in range(6)]
        ids = rows.due_notifications(database, Keys(settings.secret_key), recipients)

        [first] = _deliver_all(database, settings, pacing, ids, stop_after=1)
        assert first.paced_out and first.slept <= DRAIN_SLEEP_SECONDS
        assert first.sent == ids[: len(first.sent)] and 1 <= len(first.sent) < len(ids)
        held = ids[len(first.sent) :]
        assert sorted(first.deferred) == held
        found = rows.outbox_rows(database, held)
        assert {(r.status, r.attempts, r.last_error) for r in found.values()} == {
            (EmailStatus.DEFERRED, 0, "waiting for the pace of relay:0")
        }
        # The one that found its slot too far, then the rest of the batch a slot apart.
        due = [found[i].next_attempt_at.timestamp() for i in held]
        slot = 1 / RATE_MARGIN
        gaps = [b - a for a, b in zip(due, due[1:], strict=False)]
        assert gaps[0] >= slot and gaps[1:] == pytest.approx([slot] * len(gaps[1:]), abs=1e-3)

        reports = _deliver_all(database, settings, pacing, ids)

        assert all(report.slept <= DRAIN_SLEEP_SECONDS for report in reports)
        assert {r.attempts for r in rows.outbox_rows(database, ids).values()} == {1}
        assert len(_message_ids(sink)) == 6 and sink.refused == 0
        assert pace_store.snapshot(1).counts["relay:0:deferred"] >= len(held)


def test_securesend_emails_shows_a_deferred_email_as_waiting_for_the_rate() -> None:
    line = email_line(
        {
            "id": 7,
            "kind": "notification",
            "recipient": "r@example.test",
            "status": EmailStatus.DEFERRED.value,
            "attempts": 0,
            "messageId": "<m@securesend.test>",
            "lastError": THROTTLING_REPLY,
        }
    )
    assert "deferred (rate)" in line and "retrying" not in line
    assert line.endswith(THROTTLING_REPLY) and "attempts=0" in line

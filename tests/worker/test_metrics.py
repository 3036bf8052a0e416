"""/metrics folds settled jobs and emails into totals, so a scrape reads only recent rows,
and its counters do not go down when old rows are deleted; the queue wait is a histogram
per queue and lane (send: job row to worker start; mail: email queued to first claimed)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select

from tests.worker import rows
from worker.db import Database
from worker.domain import clock, delivery, metrics
from worker.models import (
    EmailStatus,
    JobStatus,
    Lane,
    MetricCheckpoint,
    OutboxEmail,
    SendJob,
)

SEND, MAIL = metrics.SEND_WAIT, metrics.MAIL_WAIT


def _scrape(database: Database, now: datetime) -> metrics.Snapshot:
    with database.write_session() as session:
        return metrics.snapshot(session, now=now, worker_dead_after=timedelta(seconds=15))


def _figures(snap: metrics.Snapshot) -> tuple[object, ...]:
    return (
        snap.sends_by_code,
        snap.jobs_queued,
        snap.emails_by_status,
        snap.email_retries,
        snap.email_failures,
    )


def test_scrapes_fold_settled_rows_and_survive_their_deletion(own_database: Database) -> None:
    earlier, now = clock.now() - timedelta(seconds=10), clock.now()
    with own_database.write_session() as session:
        user = rows.sender(session)
        session.add_all(
            [
                *(rows.job(user.id, earlier, "OK") for _ in range(3)),
                rows.job(user.id, earlier, "929"),
                rows.job(user.id, now, None),  # unfinished: holds the checkpoint at `now`
                rows.email(earlier, EmailStatus.SENT, attempts=2),
                rows.email(earlier, EmailStatus.FAILED, attempts=3),
                rows.email(now, EmailStatus.QUEUED, attempts=0),
            ]
        )

    first = _scrape(own_database, now)
    assert first.sends_by_code == {"OK": 3, "929": 1}
    assert first.jobs_queued == 1
    assert first.emails_by_status == {
        "queued": 1,
        "sent": 1,
        "retrying": 0,
        "failed": 1,
        "deferred": 0,
        "suppressed": 0,
        "bounced": 0,
        "complained": 0,
    }
    assert (first.email_retries, first.email_failures) == (3, 1)

    # Two hours on, the settled rows are folded; the unfinished ones hold the checkpoint.
    later = now + timedelta(hours=2)
    assert _figures(_scrape(own_database, later)) == _figures(first)
    with own_database.read_session() as session:
        assert session.scalars(select(MetricCheckpoint.until)).one() == now
    with own_database.write_session() as session:
        session.execute(delete(SendJob).where(SendJob.created_at < now))
        session.execute(delete(OutboxEmail).where(OutboxEmail.created_at < now))
    assert _figures(_scrape(own_database, later)) == _figures(first)

    # The held rows finish; once settled they are folded too, and deleting them changes
    # nothing either.
    with own_database.write_session() as session:
        job = session.scalars(select(SendJob).where(SendJob.status == JobStatus.QUEUED)).one()
        job.status, job.result_code, job.finished_at = JobStatus.SUCCEEDED, "OK", later
        email = session.scalars(select(OutboxEmail)).one()
        email.status, email.attempts = EmailStatus.SENT, 1
    final = _scrape(own_database, now + timedelta(hours=3))
    assert final.sends_by_code == {"OK": 4, "929": 1}
    assert final.jobs_queued == 0
    assert final.emails_by_status == {
        "queued": 0,
        "sent": 2,
        "retrying": 0,
        "failed": 1,
        "deferred": 0,
        "suppressed": 0,
        "bounced": 0,
        "complained": 0,
    }
    with own_database.write_session() as session:
        session.execute(delete(SendJob))
        session.execute(delete(OutboxEmail))
    assert _figures(_scrape(own_database, now + timedelta(hours=3))) == _figures(final)


def _counts(histogram: metrics.WaitHistogram) -> dict[float, int]:
    return dict(histogram.buckets) | {float("inf"): histogram.count}


def test_queue_waits_are_histograms_per_lane_that_survive_folding(
    own_database: Database,
) -> None:
    earlier, now = clock.now() - timedelta(seconds=600), clock.now()
    with own_database.write_session() as session:
        user = rows.sender(session)
        jobs = [rows.job(user.id, earlier, "OK") for _ in range(5)]
        for job, waited in zip(jobs, (0.03, 4.0, 400.0, 1.5), strict=False):
            job.started_at = earlier + timedelta(seconds=waited)
        jobs[3].lane = Lane.INTERACTIVE  # a person waited 1.5 s for a worker
        # jobs[4] started as it was created: enqueued straight to Celery, no wait known.
        claimed = rows.email(earlier, EmailStatus.SENT, attempts=1)
        claimed.first_claimed_at = earlier + timedelta(seconds=0.2)
        waiting = rows.email(now, EmailStatus.QUEUED, attempts=0)  # holds the checkpoint
        waiting.next_attempt_at = now
        waiting.lane = Lane.INTERACTIVE
        session.add_all([*jobs, claimed, waiting])

    first = _scrape(own_database, now).queue_wait
    bulk_send, interactive_send = first[SEND, Lane.BULK], first[SEND, Lane.INTERACTIVE]
    send = _counts(bulk_send)
    assert (send[0.01], send[0.05], send[2.0], send[5.0], send[300.0]) == (0, 1, 1, 2, 2)
    assert send[float("inf")] == 3
    assert abs(bulk_send.sum_seconds - 404.03) < 0.01
    # 1.5 s is under the interactive alert's 2 s bound, and counted in that lane only.
    assert (_counts(interactive_send)[1.0], _counts(interactive_send)[2.0]) == (0, 1)
    assert interactive_send.count == 1
    assert _counts(first[MAIL, Lane.BULK])[0.1] == 0
    assert _counts(first[MAIL, Lane.BULK])[0.25] == 1
    assert first[MAIL, Lane.BULK].count == 1
    assert first[MAIL, Lane.INTERACTIVE].count == 0

    # A worker claims the waiting (interactive) email 1.5 s after it was queued.
    with own_database.write_session() as session:
        (row,) = delivery.claim(
            session.connection(),
            now=now + timedelta(seconds=1.5),
            max_attempts=3,
            lease=timedelta(minutes=1),
            claimed_by="worker-1",
        )
        assert row.first_claimed_at == now + timedelta(seconds=1.5)
    with own_database.write_session() as session:  # a second claim keeps the first's time
        held = session.get(OutboxEmail, row.id)
        assert held is not None
        held.claimed_until = None
    with own_database.write_session() as session:
        delivery.claim(
            session.connection(),
            now=now + timedelta(seconds=90),
            max_attempts=3,
            lease=timedelta(minutes=1),
            claimed_by="worker-2",
        )
    mail = _scrape(own_database, now + timedelta(seconds=90)).queue_wait
    interactive_mail = mail[MAIL, Lane.INTERACTIVE]
    assert (_counts(interactive_mail)[1.0], _counts(interactive_mail)[2.0]) == (0, 1)
    assert interactive_mail.count == 1
    assert mail[MAIL, Lane.BULK].count == 1

    # Two hours on the settled rows are folded into totals; deleting them changes nothing.
    later = now + timedelta(hours=2)
    folded = _scrape(own_database, later).queue_wait
    assert {key: _counts(h) for key, h in folded.items()} == {
        **{key: _counts(h) for key, h in first.items() if key[0] == SEND},
        **{key: _counts(h) for key, h in mail.items() if key[0] == MAIL},
    }
    with own_database.write_session() as session:
        session.execute(delete(SendJob).where(SendJob.created_at < now))
        session.execute(delete(OutboxEmail).where(OutboxEmail.created_at < now))
    after = _scrape(own_database, later).queue_wait
    assert {key: _counts(h) for key, h in after.items()} == {
        key: _counts(h) for key, h in folded.items()
    }
    assert abs(after[SEND, Lane.BULK].sum_seconds - 404.03) < 0.01

"""/metrics folds settled jobs and emails into totals, so a scrape reads only recent rows,
and its counters do not go down when old rows are deleted; the queue wait is a histogram
per queue and lane (send: job row to worker start; mail: email queued to first claimed).
Webhook deliveries share the outbox but are not emails: they are counted by endpoint and
outcome, folded on a checkpoint of their own; bounces by kind, suppressions by source."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tests.worker import rows
from worker.db import Database
from worker.domain import clock, delivery, metrics
from worker.models import (
    Channel,
    EmailKind,
    EmailStatus,
    JobStatus,
    Lane,
    MetricCheckpoint,
    OutboxEmail,
    SendJob,
    Suppression,
    WebhookEndpoint,
    new_guid,
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
        checkpoint = session.get(MetricCheckpoint, metrics.MAIN_CHECKPOINT)
        assert checkpoint is not None and checkpoint.until == now
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


# --- webhook deliveries, bounces, suppressions ------------------------------------------


def _endpoint(session: Session, group_id: int, *, disabled: bool = False) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        uid=f"ep_{new_guid()[:24]}",
        group_id=group_id,
        url=f"https://hooks.example.test/{new_guid()}?token=secret",
        events="email.sent",
        sealed_secret="-",
        created_at=clock.now(),
        disabled_at=clock.now() if disabled else None,
        disabled_reason="410 Gone" if disabled else None,
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def _delivery(
    endpoint: WebhookEndpoint, created_at: datetime, status: EmailStatus, attempts: int
) -> OutboxEmail:
    """A webhook delivery as worker.domain.webhooks queues it, claimed as an email is."""
    return OutboxEmail(
        kind=EmailKind.WEBHOOK,
        channel=Channel.WEBHOOK,
        endpoint_id=endpoint.id,
        recipient=endpoint.uid,
        message_id_header=f"msg_{new_guid()}",
        template="email.sent",
        sealed_content="-",
        status=status,
        attempts=attempts,
        created_at=created_at,
        next_attempt_at=created_at,
        first_claimed_at=created_at + timedelta(seconds=100) if attempts else None,
    )


def _outcomes(snap: metrics.Snapshot, endpoint: WebhookEndpoint) -> dict[str, int]:
    return {o: n for (uid, o), n in snap.webhook_deliveries.items() if uid == endpoint.uid}


def test_webhook_deliveries_are_not_emails(own_database: Database) -> None:
    earlier, now = clock.now() - timedelta(seconds=600), clock.now()
    with own_database.write_session() as session:
        endpoint = _endpoint(session, rows.sender(session).group_id)
        email = rows.email(earlier, EmailStatus.SENT, attempts=2)
        email.first_claimed_at = earlier + timedelta(seconds=0.2)
        session.add_all(
            [
                email,
                # Delivered after retries and a 100 s wait, failed, and still retrying: none
                # is an email, a retry of one, or a wait for a mail worker.
                _delivery(endpoint, earlier, EmailStatus.SENT, attempts=3),
                _delivery(endpoint, earlier, EmailStatus.FAILED, attempts=8),
                _delivery(endpoint, earlier, EmailStatus.RETRYING, attempts=2),
            ]
        )

    for when in (now, now + timedelta(hours=2)):  # live, then folded
        snap = _scrape(own_database, when)
        assert {s: n for s, n in snap.emails_by_status.items() if n} == {"sent": 1}
        assert (snap.email_retries, snap.email_failures) == (1, 0)
        assert snap.queue_wait[MAIL, Lane.BULK].count == 1
        assert _counts(snap.queue_wait[MAIL, Lane.BULK])[0.25] == 1
        assert _outcomes(snap, endpoint) == {"queued": 0, "retrying": 1, "sent": 1, "failed": 1}

    # A delivery still retrying holds the webhook deliveries' checkpoint, not the emails'.
    with own_database.read_session() as session:
        checkpoints = {c.id: c.until for c in session.scalars(select(MetricCheckpoint))}
    assert checkpoints == {
        metrics.MAIN_CHECKPOINT: now + timedelta(hours=1),
        metrics.WEBHOOK_CHECKPOINT: earlier,
    }


def test_webhook_deliveries_by_endpoint_and_outcome_backlog_and_endpoints(
    own_database: Database,
) -> None:
    earlier, now = clock.now() - timedelta(seconds=600), clock.now()
    with own_database.write_session() as session:
        group_id = rows.sender(session).group_id
        busy, idle = _endpoint(session, group_id), _endpoint(session, group_id)
        gone = _endpoint(session, group_id, disabled=True)
        session.add_all(
            [
                *(_delivery(busy, earlier, EmailStatus.SENT, attempts=1) for _ in range(3)),
                _delivery(busy, now, EmailStatus.QUEUED, attempts=0),
                _delivery(busy, now, EmailStatus.RETRYING, attempts=1),
                _delivery(gone, earlier, EmailStatus.FAILED, attempts=2),
                rows.email(now, EmailStatus.QUEUED, attempts=0),  # an email: not in the backlog
            ]
        )

    first = _scrape(own_database, now)
    assert _outcomes(first, busy) == {"queued": 1, "retrying": 1, "sent": 3, "failed": 0}
    assert _outcomes(first, idle) == {"queued": 0, "retrying": 0, "sent": 0, "failed": 0}
    assert _outcomes(first, gone) == {"queued": 0, "retrying": 0, "sent": 0, "failed": 1}
    assert first.webhook_backlog == 2
    assert first.webhook_endpoints == {"enabled": 2, "disabled": 1}

    # The pending deliveries go; two hours on everything is folded, and pruning the rows
    # takes nothing away.
    with own_database.write_session() as session:
        session.execute(
            update(OutboxEmail)
            .where(OutboxEmail.channel == Channel.WEBHOOK, OutboxEmail.created_at == now)
            .values(status=EmailStatus.SENT)
        )
    later = now + timedelta(hours=2)
    folded = _scrape(own_database, later)
    assert _outcomes(folded, busy) == {"queued": 0, "retrying": 0, "sent": 5, "failed": 0}
    assert folded.webhook_backlog == 0
    with own_database.write_session() as session:
        session.execute(delete(OutboxEmail).where(OutboxEmail.channel == Channel.WEBHOOK))
    assert _scrape(own_database, later).webhook_deliveries == folded.webhook_deliveries

    # A removed endpoint is no longer shown; the others are.
    with own_database.write_session() as session:
        session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == gone.id))
    after = _scrape(own_database, later)
    assert {uid for uid, _ in after.webhook_deliveries} == {busy.uid, idle.uid}
    assert after.webhook_endpoints == {"enabled": 2, "disabled": 0}


def test_a_replayed_delivery_is_in_the_backlog_and_holds_no_fold(own_database: Database) -> None:
    earlier, now = clock.now() - timedelta(seconds=600), clock.now()
    with own_database.write_session() as session:
        endpoint = _endpoint(session, rows.sender(session).group_id)
        session.add(_delivery(endpoint, earlier, EmailStatus.FAILED, attempts=8))
    later = now + timedelta(hours=2)
    _scrape(own_database, later)  # folded as failed
    with own_database.write_session() as session:  # `securesend webhooks replay`
        session.execute(update(OutboxEmail).values(status=EmailStatus.QUEUED, attempts=0))
    snap = _scrape(own_database, later + timedelta(hours=1))
    assert snap.webhook_backlog == 1
    # Its first outcome stays counted (as a job's redelivered late does).
    assert _outcomes(snap, endpoint) == {"queued": 0, "retrying": 0, "sent": 0, "failed": 1}
    with own_database.read_session() as session:
        checkpoint = session.get(MetricCheckpoint, metrics.WEBHOOK_CHECKPOINT)
        assert checkpoint is not None and checkpoint.until == later


def _bounced(created_at: datetime, kind: str) -> OutboxEmail:
    email = rows.email(
        created_at, EmailStatus.COMPLAINED if kind == "complaint" else EmailStatus.BOUNCED, 1
    )
    email.bounce = kind
    return email


def test_bounces_by_kind_and_a_report_after_the_fold(own_database: Database) -> None:
    earlier, now = clock.now() - timedelta(seconds=600), clock.now()
    with own_database.write_session() as session:
        session.add_all(
            [
                *(_bounced(earlier, "hard") for _ in range(2)),
                _bounced(earlier, "soft"),
                _bounced(now, "complaint"),
                rows.email(earlier, EmailStatus.SENT, attempts=1),
                rows.email(earlier, EmailStatus.SENT, attempts=1),
            ]
        )
    first = _scrape(own_database, now)
    assert first.email_bounces == {"hard": 2, "soft": 1, "complaint": 1}
    assert (first.emails_by_status["bounced"], first.emails_by_status["complained"]) == (3, 1)

    # Folded: the same figures.
    later = now + timedelta(hours=2)
    assert _scrape(own_database, later).email_bounces == first.email_bounces

    # Reports on folded emails (a complaint days later; a soft bounce turned hard) move
    # them in the totals, as worker.domain.bounces records them.
    with own_database.write_session() as session:
        sent = session.scalars(
            select(OutboxEmail).where(OutboxEmail.status == EmailStatus.SENT).limit(1)
        ).one()
        soft = session.scalars(select(OutboxEmail).where(OutboxEmail.bounce == "soft")).one()
        for email, status, kind in (
            (sent, EmailStatus.COMPLAINED, "complaint"),
            (soft, EmailStatus.BOUNCED, "hard"),
        ):
            metrics.count_report(session, email, status=status, bounce=kind)
            email.status, email.bounce = status, kind
    reported = _scrape(own_database, later)
    assert reported.email_bounces == {"hard": 3, "soft": 0, "complaint": 2}
    assert {s: n for s, n in reported.emails_by_status.items() if n} == {
        "sent": 1,
        "bounced": 3,
        "complained": 2,
    }
    # A report on an email not folded yet changes nothing in the totals: the row says it.
    with own_database.write_session() as session:
        fresh = rows.email(later, EmailStatus.SENT, attempts=1)
        session.add(fresh)
        session.flush()
        metrics.count_report(session, fresh, status=EmailStatus.BOUNCED, bounce="soft")
        fresh.status, fresh.bounce = EmailStatus.BOUNCED, "soft"
    assert _scrape(own_database, later).email_bounces == {"hard": 3, "soft": 1, "complaint": 2}
    with own_database.write_session() as session:
        session.execute(delete(OutboxEmail).where(OutboxEmail.created_at < later))
    assert _scrape(own_database, later).email_bounces == {"hard": 3, "soft": 1, "complaint": 2}


def test_suppressions_by_source_count_active_entries_only(own_database: Database) -> None:
    now = clock.now()

    def entry(source: str, **changes: object) -> Suppression:
        row = Suppression(address=f"{new_guid()}@example.test", source=source, created_at=now)
        for name, value in changes.items():
            setattr(row, name, value)
        return row

    with own_database.write_session() as session:
        session.add_all(
            [
                entry("manual"),
                entry("manual", removed_at=now, removed_by="ops"),
                entry("bounce", expires_at=now + timedelta(days=30)),
                entry("bounce", expires_at=now + timedelta(days=1)),
                entry("bounce", expires_at=now - timedelta(seconds=1)),  # expired
                entry("complaint"),
            ]
        )
    assert _scrape(own_database, now).suppressions == {"manual": 1, "bounce": 2, "complaint": 1}
    assert _scrape(own_database, now + timedelta(days=2)).suppressions == {
        "manual": 1,
        "bounce": 1,
        "complaint": 1,
    }

"""Outbox delivery through live mail workers: .eml files on the embedded default, SMTP to a
real in-process server (aiosmtpd) in production mode, with retries and failures."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, select

from tests.factories import World
from tests.smtp_sink import SmtpSink
from tests.support import Stack, run_cli
from tests.worker import rows
from worker.db import Database
from worker.domain import bounces, clock, delivery, recovery, suppressions
from worker.domain.delivery import (
    Mime,
    OutgoingEmail,
    RetryPolicy,
    build_mime,
    email_statuses,
    header_line,
)
from worker.domain.pace import Limits, Pacing
from worker.domain.secrets import Keys
from worker.models import Channel, EmailStatus, OutboxEmail, WebhookEndpoint
from worker.pacing import FilePaceStore
from worker.settings import Settings
from worker.transports import EmlDirectoryTransport


def statuses(database: Database, guid: str) -> dict[str, dict[str, Any]]:
    with database.read_session() as session:
        return {e["recipient"]: e for e in email_statuses(session, message_guid=guid)}


def wait_for_status(
    stack: Stack, guid: str, recipient: str, wanted: set[str], *, timeout: float = 20, **more: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        email = statuses(stack.database, guid).get(recipient, {})
        if email.get("status") in wanted and all(email.get(k, 0) >= v for k, v in more.items()):
            return email
        assert time.monotonic() < deadline, f"{recipient}: {email}"
        time.sleep(0.05)


def _parts(message: EmailMessage) -> list[str]:
    return [part.get_content_type() for part in message.iter_parts()]


def test_embedded_default_writes_eml_files(sqlite_stack: Stack, unique: str) -> None:
    world = World(sqlite_stack, unique).setup()
    reader = world.user("reader")
    guid = world.draft(to=[reader], subject="Grüße")
    assert world.send(guid).status_code == 200

    email = wait_for_status(sqlite_stack, guid, reader, {"sent"})
    file_name = email["messageId"].strip("<>").replace("@", "_") + ".eml"
    path = sqlite_stack.var_dir / "outbox" / file_name
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Message-ID"] == email["messageId"]
    assert message["To"].addresses[0].addr_spec == reader
    assert "Grüße" in message["Subject"]
    assert message.get_content_type() == "multipart/alternative"
    assert _parts(message) == ["text/plain", "text/html"]

    listing = run_cli("emails", guid, env=sqlite_stack.env)
    assert listing.returncode == 0 and "sent" in listing.stdout and reader in listing.stdout


def test_smtp_delivery_mime_headers_and_bcc_privacy(
    postgres_stack: Stack, smtp_sink: SmtpSink, unique: str
) -> None:
    world = World(postgres_stack, unique)
    world.setup()
    postgres_stack.load(
        {
            "users": [
                {
                    "email": world.sender,
                    "group": world.group,
                    "firstName": "Zoë\r\nBcc: evil@example.com",
                    "lastName": "Ümlaut",
                }
            ]
        }
    )
    to, cc, bcc = world.user("to"), world.user("cc"), world.user("bcc")
    guid = world.draft(
        to=[to], cc=[cc], bcc=[bcc], subject="Grüße\r\nBcc: evil@example.com\r\n\r\nbody injection"
    )
    assert world.send(guid).status_code == 200

    for address in (to, cc, bcc):
        [received] = smtp_sink.wait_for(address)
        assert received.recipients == (address,)  # one recipient per email: Bcc stays private
        message = received.message
        raw_headers = received.raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
        assert "=?utf-8?" in raw_headers  # non-ASCII subject and names are encoded
        assert message["Bcc"] is None and message["Cc"] is None
        assert [a.addr_spec for a in message["To"].addresses] == [address]
        assert "\n" not in str(message["Subject"]) and "evil" not in str(message["To"])
        assert str(message["Subject"]).startswith("Secure message from Zoë Bcc: evil@example.com")
        assert message.get_content_type() == "multipart/alternative"
        assert _parts(message) == ["text/plain", "text/html"]
        assert (
            statuses(postgres_stack.database, guid)[address]["messageId"] == message["Message-ID"]
        )
        for other in {to, cc, bcc} - {address}:
            assert other not in received.raw.decode("utf-8", errors="replace")
    assert smtp_sink.to("evil@example.com") == []
    wait_for_status(postgres_stack, guid, bcc, {"sent"})


def test_one_connection_is_reused_across_emails(
    postgres_stack: Stack, smtp_sink: SmtpSink, unique: str
) -> None:
    world = World(postgres_stack, unique).setup()
    readers = [world.user(f"r{i}") for i in range(8)]
    guid = world.draft(to=readers)
    assert world.send(guid).status_code == 200

    received = [smtp_sink.wait_for(r)[0] for r in readers]

    sessions = {id(r.session) for r in received}
    assert len(received) == 8
    assert len(sessions) <= 2  # one connection per worker process (concurrency 2)


def test_4xx_is_retried_with_backoff_then_delivered_once(
    postgres_stack: Stack, smtp_sink: SmtpSink, unique: str
) -> None:
    world = World(postgres_stack, unique).setup()
    reader = world.user("busy")
    smtp_sink.refuse(reader, "451 4.3.0 Mailbox busy, try later", "452 4.2.2 Over quota")
    guid = world.draft(to=[reader])
    assert world.send(guid).status_code == 200

    retrying = wait_for_status(postgres_stack, guid, reader, {"retrying"})
    assert retrying["lastError"].startswith(("451", "452"))
    sent = wait_for_status(postgres_stack, guid, reader, {"sent"})

    assert sent["attempts"] == 3 and sent["lastError"] is None
    assert len(smtp_sink.to(reader)) == 1


def test_5xx_fails_permanently_and_records_the_reply(
    postgres_stack: Stack, smtp_sink: SmtpSink, unique: str
) -> None:
    world = World(postgres_stack, unique).setup()
    reader, fine = world.user("gone"), world.user("fine")
    smtp_sink.refuse(reader, "550 5.1.1 No such user here")
    guid = world.draft(to=[reader, fine])
    assert world.send(guid).status_code == 200

    failed = wait_for_status(postgres_stack, guid, reader, {"failed"})
    wait_for_status(postgres_stack, guid, fine, {"sent"})
    time.sleep(1.5)  # longer than the first retry would take

    assert failed["lastError"] == "550 5.1.1 No such user here"
    assert statuses(postgres_stack.database, guid)[reader]["attempts"] == 1
    assert smtp_sink.to(reader) == []


def test_server_down_then_back(postgres_stack: Stack, smtp_sink: SmtpSink, unique: str) -> None:
    world = World(postgres_stack, unique).setup()
    reader = world.user("patient")
    guid = world.draft(to=[reader])
    smtp_sink.stop()
    try:
        assert world.send(guid).status_code == 200
        down = wait_for_status(postgres_stack, guid, reader, {"retrying"}, attempts=2)
        assert "connection error" in down["lastError"] or "disconnected" in down["lastError"]
    finally:
        smtp_sink.start()
    sent = wait_for_status(postgres_stack, guid, reader, {"sent"})
    assert sent["attempts"] >= 2 and sent["lastError"] is None
    assert len(smtp_sink.to(reader)) == 1


def test_backoff_doubles_from_the_base_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(base_seconds=30, max_seconds=900, max_attempts=8)
    assert [policy.delay(n, rng=lambda: 1.0) for n in (1, 2, 3, 6, 7, 20)] == [
        30,
        60,
        120,
        900,
        900,
        900,
    ]
    assert [policy.delay(n, rng=lambda: 0.0) for n in (1, 2, 3)] == [15, 30, 60]


def test_mime_headers_fold_and_decode_to_what_was_sent() -> None:
    """Long and non-ASCII subjects and names: every line stays short (SMTP servers refuse
    lines over 998 octets) and a mail reader decodes exactly the text that was queued."""
    cases = [
        ("s" * 1000, "Bob Reader"),  # one word too long to fold at a space
        ("Secure message from Zoë: " + "Grüße " * 150, "Zoë Grüße"),
        ("Quarterly figures", "Bob"),
    ]
    for subject, name in cases:
        email = OutgoingEmail(
            message_id="<id@securesend.test>",
            recipient="bob@example.com",
            recipient_name=name,
            subject=subject,
            text="Grüße\n" * 200,
            html="<p>Grüße</p>" * 200,
        )
        raw = build_mime(email, mail_from="securesend <a@b.test>", date=datetime.now(UTC))
        data = raw.data
        assert max(len(line) for line in data.split(b"\r\n")) < 100
        assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF line ends only
        # With LF line ends, as a mail store keeps what the server received.
        parsed = message_from_bytes(data.replace(b"\r\n", b"\n"), policy=policy.default)
        assert str(parsed["Subject"]) == " ".join(subject.split())
        assert parsed["To"].addresses[0].display_name == name
        plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
        assert plain is not None and html is not None
        assert plain.get_content() == email.text
        assert html.get_content() == email.html


@given(
    name=st.sampled_from(["Subject", "To", "From", "Message-ID", "Content-Type"]),
    value=st.one_of(
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=90),
        st.text(max_size=120),
    ),
)
def test_a_header_line_is_what_compat32_folds(name: str, value: str) -> None:
    """Short printable ASCII lines are written as they are, the rest folded by compat32:
    either way the line compat32's generator wrote."""
    assert header_line(name, value) == compat32.clone(linesep="\r\n").fold(name, value)


def test_a_claim_takes_due_emails_nobody_holds_and_fails_spent_ones(
    own_database: Database,
) -> None:
    """One statement, on both databases: the due emails nobody holds are claimed (an
    attempt counted, the lease and the worker named, the first claim's time kept); one
    whose attempts are spent is failed instead and not returned; held or later ones are
    left alone."""
    now = clock.now()
    with own_database.write_session() as session:
        due = rows.email(now, EmailStatus.QUEUED, attempts=0)
        retried = rows.email(now, EmailStatus.RETRYING, attempts=1)
        retried.first_claimed_at = now - timedelta(minutes=5)
        spent = rows.email(now, EmailStatus.RETRYING, attempts=3)
        held = rows.email(now, EmailStatus.QUEUED, attempts=1)
        held.claimed_by, held.claimed_until = "worker-0", now + timedelta(minutes=1)
        later = rows.email(now, EmailStatus.RETRYING, attempts=1)
        emails = [due, retried, spent, held, later]
        for email in emails:
            email.next_attempt_at = now
        later.next_attempt_at = now + timedelta(minutes=1)
        session.add_all(emails)
        session.flush()
        ids = [email.id for email in emails]

    lease = timedelta(minutes=10)
    with own_database.write_session() as session:
        claimed = delivery.claim(
            session.connection(), now=now, max_attempts=3, lease=lease, claimed_by="worker-1"
        )

    assert [row.id for row in claimed] == ids[:2]
    assert [row.attempts for row in claimed] == [1, 2]
    with own_database.read_session() as session:
        after = {row.id: row for row in session.scalars(select(OutboxEmail))}
    for email_id, first_claimed in ((ids[0], now), (ids[1], now - timedelta(minutes=5))):
        row = after[email_id]
        assert (row.claimed_by, row.claimed_until) == ("worker-1", now + lease)
        assert row.first_claimed_at == first_claimed
    spent_row = after[ids[2]]
    assert (spent_row.status, spent_row.attempts, spent_row.claimed_by) == (
        EmailStatus.FAILED,
        3,
        None,
    )
    assert spent_row.last_error == "gave up after 3 attempts without a result"
    assert (after[ids[3]].claimed_by, after[ids[3]].attempts) == ("worker-0", 1)
    assert (after[ids[4]].claimed_by, after[ids[4]].attempts) == (None, 1)


def test_an_address_beyond_ascii_fails_its_email_and_the_drain_goes_on(
    own_database: Database, tmp_path: Path
) -> None:
    """An email whose address cannot be written (SMTPUTF8 is not supported) is failed
    once, with the reason, instead of failing every drain that claims it; the rest of its
    batch is delivered."""
    settings = Settings(var_dir=tmp_path, public_base_url="https://securesend.test")
    keys = Keys(settings.secret_key)
    now = clock.now()
    content = json.dumps({"subject": "Hi", "text": "t", "html": "<p>h</p>", "toName": ""})
    with own_database.write_session() as session:
        emails = [rows.email(now, EmailStatus.QUEUED, attempts=0) for _ in range(2)]
        emails[0].recipient = "josé@example.com"
        for email in emails:
            email.sealed_content, email.next_attempt_at = keys.seal(content), now
        session.add_all(emails)
        session.flush()
        ids = [email.id for email in emails]

    report = delivery.drain(
        own_database,
        delivery.Delivery(
            [EmlDirectoryTransport(tmp_path / "outbox")], Pacing(FilePaceStore(tmp_path), Limits())
        ),
        keys=keys,
        settings=settings,
        now=clock.now,
        budget_seconds=30,
    )

    assert (report.failed, report.sent) == ([ids[0]], [ids[1]])
    with own_database.read_session() as session:
        failed = session.get(OutboxEmail, ids[0])
        assert failed is not None and failed.status is EmailStatus.FAILED
        assert failed.last_error == "the recipient's address is not ASCII (SMTPUTF8)"
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


def test_a_worker_that_lost_its_claim_neither_sends_nor_records_and_a_handover_is_kept(
    own_database: Database,
) -> None:
    """Fencing (docs/reliability.md, "A frozen worker"), on both databases: worker A's
    claim is taken over (released, claimed again by B: another attempt counted), so A's
    hand-over and record find nothing; B's go through. An email B handed to the relay
    stays B's through a takeover, and once its lease lapses it is taken as sent, never
    claimed to be sent again."""
    now = clock.now()
    lease = timedelta(minutes=10)
    with own_database.write_session() as session:
        first, second = (
            rows.email(now, EmailStatus.QUEUED, 0),
            rows.email(now, EmailStatus.QUEUED, 0),
        )
        for email in (first, second):
            email.next_attempt_at = now
        session.add_all([first, second])
        session.flush()
        ids = [first.id, second.id]

    def claim_as(worker: str, at: datetime) -> list[Any]:
        with own_database.write_session() as session:
            return delivery.claim(
                session.connection(), now=at, max_attempts=5, lease=lease, claimed_by=worker
            )

    held_by_a = {
        row.id: delivery.Fence("worker-a", row.attempts) for row in claim_as("worker-a", now)
    }
    with own_database.write_session() as session:  # worker-a taken for dead
        recovery.take_back_emails(session, worker_ids=["worker-a"], now=now)
    held_by_b = {
        row.id: delivery.Fence("worker-b", row.attempts) for row in claim_as("worker-b", now)
    }
    assert held_by_b[ids[0]].attempt == 2

    assert delivery.hand_over(own_database, ids[0], held_by_a[ids[0]]) is False
    own_database.run_alone(
        lambda c: delivery._record(c, ids[0], held_by_a[ids[0]], status=EmailStatus.SENT)  # noqa: SLF001
    )
    assert rows.outbox_rows(own_database, ids)[ids[0]].claimed_by == "worker-b"  # untouched
    assert delivery.hand_over(own_database, ids[0], held_by_b[ids[0]]) is True
    assert delivery.hand_over(own_database, ids[1], held_by_b[ids[1]]) is True
    own_database.run_alone(
        lambda c: delivery._record(c, ids[1], held_by_b[ids[1]], status=EmailStatus.SENT)  # noqa: SLF001
    )

    # worker-b dies after handing ids[0] over: the takeover takes it as sent, not again.
    with own_database.write_session() as session:
        taken = recovery.take_back_emails(session, worker_ids=["worker-b"], now=now)
    assert taken == {"worker-b": [ids[0]]}
    assert claim_as("worker-c", now) == []
    after = rows.outbox_rows(own_database, ids)
    assert after[ids[0]].status is EmailStatus.SENT
    assert after[ids[0]].last_error == recovery.TAKEN_AS_SENT
    assert after[ids[1]].status is EmailStatus.SENT and after[ids[1]].handed_at is None


def _claimed_by_a(
    database: Database, email: OutboxEmail, lease: timedelta
) -> tuple[int, delivery.Fence]:
    """`email` added, due at its creation, and claimed by "worker-a" for `lease`: its id
    and the fence the claim gave."""
    now = email.created_at
    with database.write_session() as session:
        email.next_attempt_at = now
        session.add(email)
        session.flush()
        email_id = email.id
    with database.write_session() as session:
        (row,) = delivery.claim(
            session.connection(), now=now, max_attempts=5, lease=lease, claimed_by="worker-a"
        )
    return email_id, delivery.Fence("worker-a", row.attempts)


def test_an_email_handed_over_whose_lease_lapsed_is_taken_as_sent(
    own_database: Database,
) -> None:
    """A holder that still beats but never recorded (its pool process lost): once the
    lease lapses, the claim takes a handed-over email as sent rather than send it again."""
    now = clock.now()
    lease = timedelta(minutes=10)
    email_id, fence = _claimed_by_a(own_database, rows.email(now, EmailStatus.QUEUED, 0), lease)
    assert delivery.hand_over(own_database, email_id, fence)
    with own_database.write_session() as session:
        later = now + lease + timedelta(seconds=1)
        assert (
            delivery.claim(
                session.connection(), now=later, max_attempts=5, lease=lease, claimed_by="b"
            )
            == []
        )
    after = rows.outbox_rows(own_database, [email_id])[email_id]
    assert (after.status, after.last_error) == (EmailStatus.SENT, recovery.TAKEN_AS_SENT)


BOUNCE_ADDRESS = "bounces@securesend.test"
HARD_BOUNCE = bounces.Report("hard", "5.1.1", "smtp; 550 5.1.1 <reader@example.test>: no such user")


class _BouncedBeforeTheRecord:
    """A relay that accepts each email, whose bounce (a DSN to the email's return path)
    is recorded before the worker records the acceptance: the order a database outage
    between the two makes likely (the record waits it out, the bounce server does not)."""

    def __init__(self, folder: Path, database: Database, keys: Keys) -> None:
        self._relay = EmlDirectoryTransport(folder)
        self._database, self._keys = database, keys

    def send(
        self, message: Mime, *, recipient: str, hand_over: Callable[[], bool] = lambda: True
    ) -> None:
        self._relay.send(message, recipient=recipient, hand_over=hand_over)
        email_id = bounces.email_of(BOUNCE_ADDRESS, message.sender, self._keys)
        assert email_id is not None
        with self._database.write_session() as session:
            assert bounces.record_report(
                session,
                email_id=email_id,
                report=HARD_BOUNCE,
                now=clock.now(),
                suppression_days=30,
                soft_bounces=5,
                keys=self._keys,
            )

    def close(self) -> None:
        return None


@pytest.mark.parametrize("endpoint", [True, False], ids=["endpoint", "no-endpoint"])
def test_a_bounce_recorded_before_the_worker_records_the_send_stands(
    own_database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture, endpoint: bool
) -> None:
    """A report that arrived first wins, on both databases: an email claimed, handed to
    the relay and bounced before its worker records the relay's acceptance still says
    bounced, with the DSN's reason, on its delivery record; its address is suppressed;
    its group's endpoint, if it has one, hears of the bounce only (no "sent" after it);
    the claim is released; the worker logs no takeover. Without an endpoint the
    acceptance is recorded with its batch's (`_finish`), with one it is recorded at once
    with its event: the report stands against both."""
    settings = Settings(
        var_dir=tmp_path,
        public_base_url="https://securesend.test",
        mail_bounce_address=BOUNCE_ADDRESS,
    )
    keys = Keys(settings.secret_key)
    (email_id,) = rows.due_notifications(own_database, keys, ["reader@example.test"])
    if endpoint:
        with own_database.write_session() as session:
            group_id = rows.sender(session).group_id
            session.add(
                WebhookEndpoint(
                    uid=f"ep_{email_id}",
                    group_id=group_id,
                    url="https://hooks.example.test/securesend",
                    events="email.sent,email.bounced",
                    sealed_secret="-",
                    created_at=clock.now(),
                )
            )
            email = session.get(OutboxEmail, email_id)
            assert email is not None
            email.webhook_group_id = group_id
    relay = _BouncedBeforeTheRecord(tmp_path / "outbox", own_database, keys)

    with caplog.at_level(logging.INFO, logger=delivery.__name__):
        report = delivery.drain(
            own_database,
            delivery.Delivery([relay], Pacing(FilePaceStore(tmp_path), Limits())),
            keys=keys,
            settings=settings,
            now=clock.now,
            budget_seconds=30,
            claimed_by="worker-a",
        )

    assert report.sent == [email_id]  # the relay did accept it
    after = rows.outbox_rows(own_database, [email_id])[email_id]
    assert (after.status, after.bounce, after.last_error) == (
        EmailStatus.BOUNCED,
        "hard",
        HARD_BOUNCE.reason,
    )
    assert (after.claimed_by, after.claimed_until, after.handed_at) == (None, None, None)
    with own_database.read_session() as session:
        assert "reader@example.test" in suppressions.suppressed_among(
            session, ["reader@example.test"], now=clock.now()
        )
        events = session.scalars(
            select(OutboxEmail.template).where(OutboxEmail.channel == Channel.WEBHOOK)
        ).all()
    assert events == (["email.bounced"] if endpoint else [])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("the report stands" in r.getMessage() for r in caplog.records)


def test_an_email_bounced_while_claimed_is_not_sent_and_its_claim_is_released(
    own_database: Database,
) -> None:
    """The other order, on both databases: a bounce (of an earlier attempt that did reach
    the relay) recorded while a worker holds the email before its hand-over: the
    hand-over refuses (it is not sent again), and releases the claim the report left."""
    now = clock.now()
    email = rows.email(now, EmailStatus.RETRYING, 1)
    email_id, fence = _claimed_by_a(own_database, email, timedelta(minutes=10))
    with own_database.write_session() as session:
        assert bounces.record_report(
            session,
            email_id=email_id,
            report=HARD_BOUNCE,
            now=now,
            suppression_days=30,
            soft_bounces=5,
            keys=Keys(Settings().secret_key),
        )
    assert rows.outbox_rows(own_database, [email_id])[email_id].claimed_by == "worker-a"

    assert delivery.hand_over(own_database, email_id, fence) is False
    after = rows.outbox_rows(own_database, [email_id])[email_id]
    assert (after.status, after.last_error) == (EmailStatus.BOUNCED, HARD_BOUNCE.reason)
    assert (after.claimed_by, after.claimed_until, after.handed_at) == (None, None, None)


def test_a_batch_the_relay_took_is_recorded_in_one_transaction(
    own_database: Database, tmp_path: Path
) -> None:
    """On both databases: each email is handed over on its own before it goes (a
    statement each: what makes it never sent twice), and the batch's acceptances are
    recorded together at its end, in one transaction of one statement run for every
    row; every email ends sent, with its time, and held by nobody."""
    settings = Settings(var_dir=tmp_path)
    keys = Keys(settings.secret_key)
    ids = rows.due_notifications(own_database, keys, [f"r{n}@example.test" for n in range(12)])
    statements: list[tuple[str, bool]] = []

    def count(_c: Any, _cursor: Any, statement: str, _p: Any, _x: Any, many: bool) -> None:
        statements.append((statement.split()[0].upper(), many))

    event.listen(own_database.engine, "before_cursor_execute", count)
    try:
        report = delivery.drain(
            own_database,
            delivery.Delivery(
                [EmlDirectoryTransport(tmp_path / "outbox")],
                Pacing(FilePaceStore(tmp_path), Limits()),
            ),
            keys=keys,
            settings=settings,
            now=clock.now,
            budget_seconds=30,
            claimed_by="worker-a",
        )
    finally:
        event.remove(own_database.engine, "before_cursor_execute", count)

    assert sorted(report.sent) == ids
    writes = [(verb, many) for verb, many in statements if verb in ("UPDATE", "WITH")]
    one_each = [w for w in writes if not w[1]]
    assert writes.count(("UPDATE", True)) == 1, statements  # the batch's record
    # each hand-over, and two claims: the batch, then the one that found nothing left
    assert len(one_each) == len(ids) + 2, statements
    for row in rows.outbox_rows(own_database, ids).values():
        assert row.status is EmailStatus.SENT and row.sent_at is not None
        assert (row.claimed_by, row.claimed_until, row.handed_at) == (None, None, None)

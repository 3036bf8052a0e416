"""Delivering the outbox, one mechanism: claim the due emails, send each over the
process's transport outside any transaction, record each outcome (SPEC 3.2).

Claims make delivery safe with many mail workers: due emails are claimed in one
statement (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's write lock serialises
claims) by setting `claimed_until` (a lease of 1.5 times the mail task's time limit) and
`claimed_by` (the worker), so a second worker skips them; a worker that dies leaves claims
that its lifeline's successor releases (worker/lifeline.py), or that lapse. Delivery is
therefore at-least-once; a duplicate after a crash carries the same `Message-ID`.

The transport is a protocol (worker/transports.py has SMTP and `.eml` files); its
failures are classified: `TransientMailError` (4xx, connection errors: retried with
backoff) and `PermanentMailError` (5xx: recorded, never retried). Each email goes to one
envelope recipient and names only that recipient.

With traces on, each delivery is a span (`DELIVER_SPAN`) in the trace of the send that
queued the email: its outbox row keeps that send's trace context (worker.telemetry).
"""

from __future__ import annotations

import binascii
import json
import logging
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import charset as email_charset
from email.header import Header
from email.policy import compat32
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache, partial
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    Connection,
    Integer,
    Row,
    SmallInteger,
    String,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from worker import telemetry
from worker.db import WITHOUT_WAITING_FOR_DISK, Database
from worker.domain import clock, webhooks
from worker.domain.bounces import return_path
from worker.domain.pace import DRAIN_SLEEP_SECONDS, Pacing, Wait
from worker.domain.recovery import TAKEN_AS_SENT
from worker.domain.secrets import Keys
from worker.models import (
    IS_PENDING,
    PENDING_EMAIL,
    Channel,
    EmailStatus,
    Message,
    OutboxEmail,
    WebhookEndpoint,
    table,
)
from worker.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def header_safe(value: str) -> str:
    """A header value with every CR, LF and other control character replaced by a space,
    so user input can never add a header (or a recipient)."""
    return " ".join(_CONTROL.sub(" ", value).split())


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    message_id: str
    recipient: str
    recipient_name: str
    subject: str
    text: str
    html: str
    # The envelope sender when bounces come back to securesend (VERP); else MAIL_FROM's.
    return_path: str | None = None


@dataclass(frozen=True, slots=True)
class Mime:
    """An email as it goes on the wire: its bytes (CRLF line ends), the envelope sender
    (`MAIL FROM`) and its Message-ID (the `.eml` transport names its file after it)."""

    data: bytes
    sender: str
    message_id: str


# Headers are folded and encoded as the standard library's compat32 generator does it
# (the same lines); the rest of the message is written here: Python's generator took
# ~0.2 ms per email to write what two QP-encoded parts and a boundary are
# (docs/performance.md).
_UTF8 = email_charset.Charset("utf-8")
_UTF8.header_encoding = email_charset.BASE64
MAX_HEADER_LINE = 78  # compat32's, as RFC 5322 recommends
_FOLD = compat32.clone(linesep="\r\n", max_line_length=MAX_HEADER_LINE)
MAX_PLAIN_WORD = 60


def build_mime(email: OutgoingEmail, *, mail_from: str, date: datetime) -> Mime:
    """multipart/alternative (text, then html) addressed to one recipient only; non-ASCII
    headers encoded (RFC 2047), bodies UTF-8 in quoted-printable. Raises
    `PermanentMailError` for a recipient's address beyond ASCII."""
    from_header, from_address = _from(mail_from)
    try:
        to_header = formataddr((header_safe(email.recipient_name), email.recipient), charset=_UTF8)
    except UnicodeEncodeError as e:
        # formataddr writes ASCII addresses only, and the headers of an internationalised
        # address (SMTPUTF8) are not written here: the email cannot go, now or later.
        raise PermanentMailError("the recipient's address is not ASCII (SMTPUTF8)") from e
    # "=_" never starts a quoted-printable line, so no body line can be mistaken for it;
    # short enough that the Content-Type header fits on one line.
    boundary = "=_" + secrets.token_hex(12)
    headers = (
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ("MIME-Version", "1.0"),
        ("From", from_header),
        ("To", to_header),
        ("Subject", _subject_header(header_safe(email.subject))),
        ("Message-ID", email.message_id),
        ("Date", format_datetime(date)),
        ("Auto-Submitted", "auto-generated"),
    )
    head = "".join(header_line(name, value) for name, value in headers)
    data = b"".join(
        (
            head.encode(),
            b"\r\n",
            _text_part(email.text, "plain", boundary),
            _text_part(email.html, "html", boundary),
            f"--{boundary}--\r\n".encode(),
        )
    )
    return Mime(data=data, sender=email.return_path or from_address, message_id=email.message_id)


@lru_cache(maxsize=8)
def _from(mail_from: str) -> tuple[str, str]:
    """`MAIL_FROM` as the From header gives it, and the envelope sender: parsed once
    (parsing it took a tenth of a drain's CPU)."""
    name, address = parseaddr(mail_from)
    return formataddr((header_safe(name), address), charset=_UTF8), address


def header_line(name: str, value: str) -> str:
    """`name: value` and CRLF, folded and encoded as compat32 does it (`_FOLD`). A short
    printable ASCII line needs neither, and compat32's `Header` takes ~5 µs to say so."""
    line = f"{name}: {value}"
    if isinstance(value, str) and value.isascii() and value.isprintable():
        if len(line) <= MAX_HEADER_LINE:
            return line + "\r\n"
    return _FOLD.fold(name, value)


def _subject_header(subject: str) -> str:
    """Plain when it is ASCII that folds at its spaces, RFC 2047 encoded words otherwise:
    non-ASCII text, or a word too long for one line (a header line must stay under 998
    octets, and compat32 folds plain text only at whitespace)."""
    if subject.isascii() and all(len(word) <= MAX_PLAIN_WORD for word in subject.split()):
        return subject
    # compat32 folds a Header object as encoded words (typeshed only knows str).
    return Header(subject, _UTF8)  # type: ignore[return-value]


def _text_part(text: str, subtype: str, boundary: str) -> bytes:
    """One part of the alternative: UTF-8 in quoted-printable, lines of 76 at most."""
    body = binascii.b2a_qp(text.replace("\r\n", "\n").encode(), istext=True)
    return b"".join(
        (
            f"--{boundary}\r\n".encode(),
            f'Content-Type: text/{subtype}; charset="utf-8"\r\n'.encode(),
            b"MIME-Version: 1.0\r\n",
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            body.replace(b"\n", b"\r\n"),
            b"\r\n",  # the line break before the next boundary belongs to the boundary
        )
    )


class MailError(Exception):
    """Delivery of one email failed; `reply` is what the server (or the socket) said."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class TransientMailError(MailError):
    """Worth retrying: a 4xx reply or a connection problem."""


class PermanentMailError(MailError):
    """Not worth retrying: a 5xx reply."""


class ThrottledMailError(TransientMailError):
    """The relay asks to slow down (worker.domain.pace.is_throttle): not an attempt; the
    pace drops and the email is deferred."""


class UnreachableMailError(TransientMailError):
    """The relay could not be reached, or dropped the connection: the next relay is tried."""


class MailTransport(Protocol):
    def send(
        self, message: Mime, *, recipient: str, hand_over: Callable[[], bool] = lambda: True
    ) -> None:
        """Send `message` to exactly `recipient`. `hand_over()` is called at the last moment
        the email can still be taken back (before SMTP's final dot, before the `.eml`
        file's rename): False means this worker no longer holds it, and the transport
        abandons it (raising `EmailNotHeld`)."""
        ...

    def close(self) -> None: ...


class EmailNotHeld(Exception):  # noqa: N818 - what happened, not an error of the email
    """The email was taken back from this worker (it was frozen, or its claim lapsed)
    before it could be handed to the relay: not sent, not recorded."""


PENDING = PENDING_EMAIL


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed attempt is tried again: email backs off exponentially with jitter;
    webhooks follow a fixed schedule (`schedule`: the waits after each failed attempt,
    one attempt more than waits)."""

    base_seconds: float
    max_seconds: float
    max_attempts: int
    schedule: tuple[float, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            base_seconds=settings.mail_retry_base_seconds,
            max_seconds=settings.mail_retry_max_seconds,
            max_attempts=settings.mail_max_attempts,
        )

    @classmethod
    def for_webhooks(cls, settings: Settings) -> RetryPolicy:
        schedule = settings.webhook_retry_delays
        return cls(
            base_seconds=schedule[0] if schedule else 0.0,
            max_seconds=max(schedule, default=0.0),
            max_attempts=len(schedule) + 1,
            schedule=schedule,
        )

    def delay(self, attempts: int, *, rng: Callable[[], float] = random.random) -> float:
        """After `attempts` failed attempts: the schedule's wait, or exponential backoff
        with full jitter (uniform in [cap/2, cap], where cap doubles with each attempt
        from the base up to the maximum)."""
        if self.schedule:
            return self.schedule[min(len(self.schedule), max(1, attempts)) - 1]
        cap = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        return float(cap / 2 + rng() * cap / 2)


@dataclass
class DeliveryReport:
    sent: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retry_in: dict[int, float] = field(default_factory=dict)
    # Back in the queue unattempted (the pace held them): due again in so many seconds.
    deferred: dict[int, float] = field(default_factory=dict)
    # How long the drain slept for the relay's slots; once the relay's pace sent a batch
    # back, the drain claims no more.
    slept: float = 0.0
    paced_out: bool = False
    # Webhook events the outcomes queued (a webhook drain is asked for when there are).
    events: int = 0


_OUTBOX = table(OutboxEmail)


def _claimable(
    now: datetime | BindParameter[datetime], channel: int | BindParameter[int] = Channel.EMAIL
) -> Any:
    """One channel's rows that are due and held by nobody: never claimed, or the claim
    has lapsed. Pending in the words of the outbox's partial index (`PENDING_CONDITION`),
    which the claim walks."""
    c = _OUTBOX.c
    return (
        c.channel == channel,
        IS_PENDING,
        c.next_attempt_at <= now,
        or_(c.claimed_until.is_(None), c.claimed_until < now),
    )


def claim_lease(settings: Settings) -> timedelta:
    """How long a claim holds: past the mail task's hard time limit the task that made it
    is certainly gone, so the email may be claimed again."""
    return timedelta(seconds=settings.mail_task_time_limit_seconds * 1.5)


DRAIN_BATCH = 50


def _claim_statement() -> Any:
    """`claim`'s one statement: lock up to `DRAIN_BATCH` claimable rows of one channel,
    interactive first, then oldest first (the order of the partial index `ix_outbox_due`,
    which the claim walks until it has its batch), skipping those another worker is
    locking; and, in the same UPDATE, claim each; or take it as sent when its lapsed
    holder had handed it to the relay (it may be there: never sent twice); or fail it
    when its attempts are spent. Every SET reads the row as it was."""
    c = _OUTBOX.c
    now = bindparam("now", type_=c.next_attempt_at.type)
    handed = c.handed_at.is_not(None)
    spent = c.attempts >= bindparam("max_attempts", type_=Integer)
    settled = or_(handed, spent)
    due = (
        select(c.id)
        .where(*_claimable(now, bindparam("claim_channel", type_=SmallInteger)))
        .order_by(c.lane, c.id)
        .limit(DRAIN_BATCH)
        .with_for_update(skip_locked=True)
    )
    gave_up = literal("gave up after ") + cast(c.attempts, String) + " attempts without a result"
    return (
        update(_OUTBOX)
        .where(c.id.in_(due))
        .values(
            status=case(
                (handed, literal(EmailStatus.SENT, c.status.type)),
                (spent, literal(EmailStatus.FAILED, c.status.type)),
                else_=c.status,
            ),
            last_error=case((handed, literal(TAKEN_AS_SENT)), (spent, gave_up), else_=c.last_error),
            sent_at=case((handed, c.handed_at), else_=c.sent_at),
            claimed_until=case(
                (settled, c.claimed_until), else_=bindparam("until", type_=c.claimed_until.type)
            ),
            claimed_by=case(
                (settled, c.claimed_by), else_=bindparam("claimed_by", type_=c.claimed_by.type)
            ),
            attempts=case((settled, c.attempts), else_=c.attempts + 1),
            # The end of its wait in the queue (/metrics), the first time it is claimed.
            first_claimed_at=case(
                (settled, c.first_claimed_at), else_=func.coalesce(c.first_claimed_at, now)
            ),
        )
        .returning(
            c.id,
            c.status,
            c.attempts,
            c.kind,
            c.recipient,
            c.message_id_header,
            c.sealed_content,
            c.trace_parent,
            c.first_claimed_at,
            c.lane,
            c.endpoint_id,
            c.template,
            c.webhook_group_id,
        )
    )


_CLAIM = _claim_statement()


def claim(
    connection: Connection,
    *,
    now: datetime,
    max_attempts: int,
    lease: timedelta,
    claimed_by: str | None,
    channel: Channel = Channel.EMAIL,
    gave_up: list[Row[Any]] | None = None,
) -> list[Row[Any]]:
    """Claim up to `DRAIN_BATCH` of one channel's due rows nobody holds, those of
    interactive sends first, then oldest first, each in the name of `claimed_by` (this
    worker), in one statement (`Database.run_alone`: one round trip on PostgreSQL). A row
    that has used all its attempts without a recorded result (its workers kept dying
    while sending it) is failed instead of being tried forever (and added to `gave_up`).
    Returns the claimed rows (`_CLAIM`'s columns) in the order they are to be sent."""
    rows = connection.execute(
        _CLAIM,
        {
            "now": now,
            "max_attempts": max_attempts,
            "until": now + lease,
            "claimed_by": claimed_by,
            "claim_channel": int(channel),
        },
    ).all()
    if gave_up is not None:
        gave_up.extend(row for row in rows if row.status is EmailStatus.FAILED)
    for row in rows:
        if row.status is EmailStatus.SENT:
            logger.warning("outbox row %d: %s", row.id, TAKEN_AS_SENT)
    return sorted((row for row in rows if row.status in PENDING_EMAIL), key=_claim_order)


def _claim_order(row: Row[Any]) -> tuple[int, int]:
    return int(row.lane), int(row.id)


def any_due(session: Session, *, now: datetime, channel: Channel = Channel.EMAIL) -> bool:
    """Whether a row of `channel` is due that nobody holds (the sweep asks)."""
    found = session.scalar(select(OutboxEmail.id).where(*_claimable(now, channel)).limit(1))
    return found is not None


def next_due_in(
    session: Session, *, now: datetime, channel: Channel = Channel.EMAIL
) -> float | None:
    """Seconds until a row of `channel` nobody holds is due (a retry's backoff, a
    deferral for the pace): 0.0 when one is due now, None when none is pending."""
    if any_due(session, now=now, channel=channel):
        return 0.0
    c = _OUTBOX.c
    earliest = session.scalar(
        select(func.min(c.next_attempt_at)).where(
            c.channel == channel,
            IS_PENDING,
            or_(c.claimed_until.is_(None), c.claimed_until < now),
        )
    )
    return None if earliest is None else max(0.0, (earliest - now).total_seconds())


def _outgoing(row: Row[Any], keys: Keys, bounce_address: str) -> OutgoingEmail:
    """The email a claimed row holds, unsealed, with its own return path when bounces
    come back to `bounce_address`."""
    content = json.loads(keys.unseal(row.sealed_content))
    return OutgoingEmail(
        message_id=row.message_id_header,
        recipient=row.recipient,
        recipient_name=content.get("toName", ""),
        subject=content["subject"],
        text=content["text"],
        html=content["html"],
        return_path=return_path(bounce_address, row.id, keys) if bounce_address else None,
    )


@dataclass(frozen=True, slots=True)
class Fence:
    """What a worker holds a claimed row by: its name in `claimed_by` and the attempt the
    claim counted. A takeover releases the claim (`claimed_by` NULL) and a new claim
    counts another attempt, so a worker that was frozen meanwhile finds its fence gone:
    it neither sends (`hand_over`) nor records (`_record`) what it no longer holds."""

    holder: str
    attempt: int

    def params(self) -> dict[str, Any]:
        return {"held_by": self.holder, "held_attempt": self.attempt}


_HELD = (
    func.coalesce(_OUTBOX.c.claimed_by, "") == bindparam("held_by"),
    _OUTBOX.c.attempts == bindparam("held_attempt"),
)
# What a bounce or complaint wrote (worker.domain.bounces): the last word on an email the
# relay accepted, whichever came first, the report or the record of the attempt it is
# about. Not "not pending": a late holder's record still replaces a claim's "taken as
# sent" (`_claim_statement` keeps the fence of a handed-over email) with what the relay
# said. Two comparisons, not IN: an expanding IN cannot go in an executemany.
_REPORTED = or_(_OUTBOX.c.status == EmailStatus.BOUNCED, _OUTBOX.c.status == EmailStatus.COMPLAINED)
# Built once, through Core: one per email delivered, committed on its own without waiting
# for the disk (lost only with the database server: the email is then sent again). Only
# while the worker still holds the row: a row taken over meanwhile is the new holder's;
# and never over a report.
_RECORD_EMAIL = update(_OUTBOX).where(
    _OUTBOX.c.id == bindparam("email_id"), *_HELD, ~_REPORTED, WITHOUT_WAITING_FOR_DISK
)
# A report recorded while this worker held the email leaves the claim to its holder (a
# report has no fence to check): the holder releases it here, the report kept. Its
# `updated_at` stays the report's: the status and reply did not change.
_RELEASE_REPORTED = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("email_id"), *_HELD, _REPORTED, WITHOUT_WAITING_FOR_DISK)
    .values(claimed_until=None, claimed_by=None, handed_at=None)
)


def _released(**values: Any) -> dict[str, Any]:
    """An outcome's columns: the claim released, the time of the change."""
    return {
        "claimed_until": None,
        "claimed_by": None,
        "handed_at": None,
        "updated_at": clock.now(),
        **values,
    }


def _record(connection: Connection, email_id: int, fence: Fence, **values: Any) -> bool:
    """Record an outcome on a row this worker holds, its claim released. True when a
    bounce or complaint was recorded on it first: the report stands, only the claim is
    released. A row taken over is left alone (and logged)."""
    recorded = connection.execute(
        _RECORD_EMAIL, _released(email_id=email_id, **fence.params(), **values)
    ).rowcount
    return not recorded and _let_go(connection, email_id, fence, "its outcome not recorded")


def _record_many(connection: Connection, outcomes: list[dict[str, Any]]) -> None:
    """`_record` for many rows at once, one statement run for each; the rows a bounce or
    complaint was recorded on meanwhile released, the reports kept, and the rows taken
    over counted in a log line."""
    recorded = connection.execute(_RECORD_EMAIL, [_released(**o) for o in outcomes]).rowcount
    if recorded >= len(outcomes):
        return
    held = [{k: o[k] for k in ("email_id", "held_by", "held_attempt")} for o in outcomes]
    released = connection.execute(_RELEASE_REPORTED, held).rowcount
    if released:
        logger.info(
            "%d outbox rows bounced or complained while held: the report stands, each", released
        )
    if dropped := len(outcomes) - recorded - released:
        logger.warning(
            "%d outbox rows no longer held by %s (taken over while this worker was away): "
            "dropped, their outcomes not recorded",
            dropped,
            outcomes[0]["held_by"] or "-",
        )


def _let_go(connection: Connection, email_id: int, fence: Fence, what: str) -> bool:
    """After this worker's statement on row `email_id` changed nothing: True, the claim
    released, if a bounce or complaint was recorded on it while this worker held it;
    else False, logged as taken over."""
    released = connection.execute(
        _RELEASE_REPORTED, {"email_id": email_id, **fence.params()}
    ).rowcount
    if released:
        logger.info(
            "outbox row %d: bounced or complained while %s held it; the report stands: %s",
            email_id,
            fence.holder or "-",
            what,
            extra={"outbox_id": email_id},
        )
        return True
    _log_dropped(email_id, fence, what)
    return False


def _log_dropped(row_id: int, fence: Fence, what: str) -> None:
    logger.warning(
        "outbox row %d: no longer held by %s (attempt %d; taken over while this worker was "
        "away): dropped, %s",
        row_id,
        fence.holder or "-",
        fence.attempt,
        what,
        extra={"outbox_id": row_id, "dropped": what},
    )


# The hand-over (`Fence`): the last statement before an email goes to the relay marks it
# handed over, if and only if this worker still holds it. A handed-over email is never
# sent again: a takeover (worker.domain.recovery) or a lapsed lease (`_claim_statement`)
# takes it as sent; its holder, if it was only frozen, sends the final dot when it wakes
# and finds the record no longer its own.
_HAND_OVER = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("email_id"), *_HELD, IS_PENDING, WITHOUT_WAITING_FOR_DISK)
    .values(handed_at=bindparam("handed"))
    .returning(_OUTBOX.c.id)
)


def hand_over(database: Database, email_id: int, fence: Fence) -> bool:
    """Mark email `email_id` handed to the relay if this worker still holds it (one round
    trip); False, and a log line, if it was taken over. A database outage is waited out
    as a record's is (the relay waits for the final dot meanwhile): a drain that gave up
    here would leave its batch claimed until the lease lapsed."""
    held = _through_outage(
        database,
        lambda connection: connection.execute(
            _HAND_OVER, {"email_id": email_id, "handed": clock.now(), **fence.params()}
        ).first(),
    )
    if held is None:
        # A report on an earlier attempt (it did reach the relay) may have come meanwhile.
        _through_outage(database, lambda c: _let_go(c, email_id, fence, "not sent"))
    return held is not None


def still_held(database: Database, row_id: int, fence: Fence) -> bool:
    """Whether this worker still holds outbox row `row_id` (a webhook delivery, checked
    before it is posted); a database outage is waited out, as for `hand_over`."""
    held = _through_outage(
        database,
        lambda connection: connection.execute(
            select(_OUTBOX.c.id).where(_OUTBOX.c.id == row_id, *_HELD, IS_PENDING),
            fence.params(),
        ).first(),
    )
    if held is None:
        _log_dropped(row_id, fence, "not posted")
    return held is not None


# The span of one delivery (worker.telemetry): ids, kind, attempt and status only.
DELIVER_SPAN = "securesend.email.deliver"


@dataclass(frozen=True, slots=True)
class _Claimed:
    email_id: int
    attempts: int
    email: OutgoingEmail
    kind: str
    trace_parent: str | None
    # The sender's group, when its webhook endpoints hear of this email's outcomes.
    webhook_group_id: int | None = None
    fence: Fence = Fence("", 0)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a drain delivers with: the process's transports to each relay, in order, and
    the pace they share with every worker (worker.domain.pace)."""

    relays: Sequence[MailTransport]
    pacing: Pacing


def _deliver_batch(
    database: Database,
    delivery: Delivery,
    *,
    keys: Keys,
    settings: Settings,
    now: Callable[[], datetime],
    claimed_by: str | None,
    report: DeliveryReport,
    deadline: float,
) -> int:
    """Claim one batch, send and record each; returns how many were claimed. Past the
    deadline, or when the relay's pace holds every email for longer than a short sleep,
    the rest of the batch goes back unattempted, due when the pace allows."""
    policy = RetryPolicy.from_settings(settings)
    gave_up: list[Row[Any]] = []
    claimed = database.run_alone(
        lambda connection: [
            _Claimed(
                row.id,
                row.attempts,
                _outgoing(row, keys, settings.mail_bounce_address),
                row.kind.value,
                row.trace_parent,
                row.webhook_group_id,
                Fence(claimed_by or "", row.attempts),
            )
            for row in claim(
                connection,
                now=now(),
                max_attempts=policy.max_attempts,
                lease=claim_lease(settings),
                claimed_by=claimed_by,
                gave_up=gave_up,
            )
        ]
    )
    for row in gave_up:  # failed by the claim: its workers kept dying while sending it
        if row.webhook_group_id is not None:
            report.events += _tell(database, row.id, EmailStatus.FAILED, keys, reason=None)
    held: Counter[str] = Counter()  # deferred in this batch so far, by the key that held them
    sent: list[dict[str, Any]] = []  # the relay took them: recorded together (`_finish`)
    try:
        _deliver_claimed(
            database,
            delivery,
            claimed,
            keys=keys,
            settings=settings,
            policy=policy,
            now=now,
            report=report,
            deadline=deadline,
            held=held,
            sent=sent,
        )
    finally:
        if sent:
            _through_outage(database, lambda c: _record_many(c, sent), together=True)
    delivery.pacing.flush()
    return len(claimed)


def _deliver_claimed(
    database: Database,
    delivery: Delivery,
    claimed: list[_Claimed],
    *,
    keys: Keys,
    settings: Settings,
    policy: RetryPolicy,
    now: Callable[[], datetime],
    report: DeliveryReport,
    deadline: float,
    held: Counter[str],
    sent: list[dict[str, Any]],
) -> None:
    """Send each claimed email in turn (`_deliver_one`); past the deadline, or once the
    relay's pace holds every email, the rest goes back unattempted."""
    for position, item in enumerate(claimed):
        if time.monotonic() >= deadline:
            _defer(database, claimed[position:], report, now=now, due_in=0.0, reason=None)
            break
        # One span per delivery, in the trace of the send that queued the email.
        with telemetry.span(
            DELIVER_SPAN,
            traceparent=item.trace_parent,
            attributes={
                "securesend.email.id": item.email_id,
                "securesend.email.kind": item.kind,
                "securesend.email.attempt": item.attempts,
            },
        ) as span:
            outcome = _deliver_one(
                database,
                delivery,
                item,
                keys=keys,
                settings=settings,
                policy=policy,
                now=now,
                report=report,
                held=held,
                sent=sent,
            )
            span.set_attribute("securesend.email.status", outcome.status.value)
        if outcome.holds_every_email:
            # The relay's pace holds every email alike: the rest of the batch goes back
            # too, one slot apart after this one.
            rest = claimed[position + 1 :]
            _defer(
                database,
                rest,
                report,
                now=now,
                due_in=outcome.due_in + outcome.spacing,
                spacing=outcome.spacing,
                reason=outcome.reason,
            )
            delivery.pacing.deferred(outcome.relay, item.email.recipient, "relay", len(rest))
            report.paced_out = True
            break


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: EmailStatus
    relay: int = 0
    due_in: float = 0.0  # deferred: due again in this many seconds
    holds_every_email: bool = False  # deferred for the relay's pace, not a throttle reply
    spacing: float = 0.0  # deferred: the slot of the key that held it
    reason: str | None = None


def _wait_for_slot(
    pacing: Pacing, relay: int, recipient: str, report: DeliveryReport
) -> Wait | None:
    """Sleep until the relay's next slot while the drain's sleeps stay within
    `DRAIN_SLEEP_SECONDS` in all (the relay's pace holds every email alike: there is
    nothing else to send meanwhile); a domain's wait, or one past that, is returned to
    defer the email."""
    while (wait := pacing.wait(relay, recipient)) is not None:
        if wait.reason != "relay" or report.slept + wait.seconds > DRAIN_SLEEP_SECONDS:
            return wait
        time.sleep(wait.seconds)
        report.slept += wait.seconds
    return None


def _deliver_one(
    database: Database,
    delivery: Delivery,
    item: _Claimed,
    *,
    keys: Keys,
    settings: Settings,
    policy: RetryPolicy,
    now: Callable[[], datetime],
    report: DeliveryReport,
    held: Counter[str],
    sent: list[dict[str, Any]],
) -> _Outcome:
    """Send one claimed email through the first relay that is up, when the pace allows,
    and record its outcome: sent (with the batch's, `_finish`), failed, retrying, or
    deferred (not an attempt) when the pace holds it or the relay throttled it. `held`
    counts the emails of the batch deferred so far by each key: each one more is due one
    slot later."""
    email_id, attempts, email = item.email_id, item.attempts, item.email
    pacing = delivery.pacing
    tried: list[int] = []
    outcome: dict[str, Any]
    try:
        mime = build_mime(email, mail_from=settings.mail_from, date=now())
    except PermanentMailError as e:
        logger.warning("email %d cannot be written: %s", email_id, e.reply)
        report.failed.append(email_id)
        outcome = {"status": EmailStatus.FAILED, "last_error": e.reply}
        return _finish(database, item, outcome, keys=keys, report=report)
    unreachable: TransientMailError | None = None
    while (relay := pacing.relay(tried=tried)) is not None:
        wait = _wait_for_slot(pacing, relay, email.recipient, report)
        if wait is not None:
            key = pacing.key_holding(relay, email.recipient, wait)
            spacing = pacing.spacing(relay, email.recipient)
            due_in = wait.seconds + held[key] * spacing
            held[key] += 1
            pacing.deferred(relay, email.recipient, wait.reason)
            reason = f"waiting for the pace of {key}"
            _defer(database, [item], report, now=now, due_in=due_in, reason=reason)
            holds_every_email = wait.reason == "relay"
            return _Outcome(EmailStatus.DEFERRED, relay, due_in, holds_every_email, spacing, reason)
        try:
            delivery.relays[relay].send(
                mime,
                recipient=email.recipient,
                hand_over=partial(hand_over, database, email_id, item.fence),
            )
        except EmailNotHeld:
            return _Outcome(EmailStatus.QUEUED, relay, reason="taken over")
        except UnreachableMailError as e:
            logger.warning("relay %d unreachable: %s", relay, e.reply)
            pacing.relay_failed(relay)
            tried.append(relay)
            unreachable = e
            continue
        except ThrottledMailError as e:
            key, pace = pacing.throttled(relay, email.recipient)
            logger.info(
                "email %d: relay %d throttled it; %s now at %.2f/s", email_id, relay, key, pace
            )
            due_in = (1 + held[key]) / pace
            held[key] += 1
            _defer(database, [item], report, now=now, due_in=due_in, reason=e.reply)
            return _Outcome(EmailStatus.DEFERRED, relay, due_in)
        except TransientMailError as e:
            pacing.relay_failed(relay)
            outcome = _retry_or_fail(email_id, attempts, e, policy=policy, now=now, report=report)
        except PermanentMailError as e:
            pacing.relay_ok(relay)
            logger.warning("email %d refused permanently", email_id)
            outcome = {"status": EmailStatus.FAILED, "last_error": e.reply}
            report.failed.append(email_id)
        else:
            pacing.relay_ok(relay)
            pacing.accepted(relay, email.recipient)
            outcome = {"status": EmailStatus.SENT, "sent_at": now(), "last_error": None}
            report.sent.append(email_id)
        return _finish(database, item, outcome, keys=keys, report=report, relay=relay, sent=sent)
    assert unreachable is not None  # at least one relay was tried
    outcome = _retry_or_fail(email_id, attempts, unreachable, policy=policy, now=now, report=report)
    return _finish(database, item, outcome, keys=keys, report=report)


def _retry_or_fail(
    email_id: int,
    attempts: int,
    error: TransientMailError,
    *,
    policy: RetryPolicy,
    now: Callable[[], datetime],
    report: DeliveryReport,
) -> dict[str, Any]:
    if attempts >= policy.max_attempts:
        logger.warning("email %d failed after %d attempts", email_id, attempts)
        report.failed.append(email_id)
        return {"status": EmailStatus.FAILED, "last_error": error.reply}
    delay = policy.delay(attempts)
    logger.info("email %d: transient failure, retry in %.1fs", email_id, delay)
    report.retry_in[email_id] = delay
    return {
        "status": EmailStatus.RETRYING,
        "last_error": error.reply,
        "next_attempt_at": now() + timedelta(seconds=delay),
    }


# The events an email's recorded outcome raises for its group's webhook endpoints.
_OUTCOME_EVENTS = {EmailStatus.SENT: webhooks.EMAIL_SENT, EmailStatus.FAILED: webhooks.EMAIL_FAILED}


def _finish(
    database: Database,
    item: _Claimed,
    outcome: dict[str, Any],
    *,
    keys: Keys,
    report: DeliveryReport,
    relay: int = 0,
    sent: list[dict[str, Any]] | None = None,
) -> _Outcome:
    """Record an email's outcome; when its group's endpoints hear of it (sent, failed),
    the event is queued in the same transaction. An email the relay took whose group
    hears of nothing is added to `sent` instead, which its batch records in one
    transaction at the end: it was handed over, so should the worker die first, a
    takeover takes it as sent, which it is (`hand_over`)."""
    status = EmailStatus(outcome["status"])
    if status is EmailStatus.SENT and item.webhook_group_id is None and sent is not None:
        sent.append({"email_id": item.email_id, **item.fence.params(), **outcome})
        return _Outcome(status, relay)

    def record(connection: Connection) -> None:
        _record(connection, item.email_id, item.fence, **outcome)

    if item.webhook_group_id is None or status not in _OUTCOME_EVENTS:
        _through_outage(database, record)
    else:
        reason = outcome.get("last_error") if status is EmailStatus.FAILED else None

        def record_and_tell(connection: Connection) -> int:
            if _record(connection, item.email_id, item.fence, **outcome):
                return 0  # reported first: the report's event was the last word
            return _events_for(connection, item.email_id, status, keys, reason=reason)

        report.events += _through_outage(database, record_and_tell, together=True)
    return _Outcome(status, relay)


def _events_for(
    connection: Connection, email_id: int, status: EmailStatus, keys: Keys, *, reason: str | None
) -> int:
    details = {"reason": reason} if status is EmailStatus.FAILED else {}
    return webhooks.emit_for_email(
        connection,
        email_id=email_id,
        event_type=_OUTCOME_EVENTS[status],
        status=status.value,
        at=clock.now(),
        keys=keys,
        **details,
    )


def _tell(
    database: Database, email_id: int, status: EmailStatus, keys: Keys, *, reason: str | None
) -> int:
    """Queue the event of an outcome recorded already (the claim failed the email)."""
    return _through_outage(
        database,
        lambda connection: _events_for(connection, email_id, status, keys, reason=reason),
        together=True,
    )


def _defer(
    database: Database,
    items: Sequence[_Claimed],
    report: DeliveryReport,
    *,
    now: Callable[[], datetime],
    due_in: float,
    spacing: float = 0.0,
    reason: str | None,
) -> None:
    """Put claimed emails back in the queue unattempted (the claim's count of the attempt
    undone), due one `spacing` apart from `due_in`: `deferred` with `reason` when the pace
    held them, or as they were (reason None: a drain out of time never tried them)."""
    if not items:
        return
    start = now()
    held = {"status": EmailStatus.DEFERRED, "last_error": reason} if reason is not None else {}
    outcomes = []
    for position, item in enumerate(items):
        seconds = due_in + position * spacing
        outcomes.append(
            {
                "email_id": item.email_id,
                **item.fence.params(),
                "attempts": item.attempts - 1,
                "next_attempt_at": start + timedelta(seconds=seconds),
                **held,
            }
        )
        report.deferred[item.email_id] = seconds
    _through_outage(database, lambda c: _record_many(c, outcomes))


# A database that went away while an email was being sent is waited for this long, so that
# what the server accepted is recorded (not sent again when the claim lapses) and the rest
# of the batch goes on; past it, the claims lapse and the sweep takes over.
RECORD_PATIENCE_SECONDS = 30.0


def _through_outage(
    database: Database, write: Callable[[Connection], T], *, together: bool = False
) -> T:
    """`write(connection)` (an email's record, its hand-over, a check that it is still
    held), each statement committed on its own, or all `together` in one transaction;
    tried again while the database is away, for a while."""
    deadline = time.monotonic() + RECORD_PATIENCE_SECONDS
    pause = 0.5
    while True:
        try:
            if together:
                return database.run(lambda session: write(session.connection()))
            return database.run_alone(write)
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("database unavailable; trying an email's statement again")
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def email_statuses(session: Session, *, message_guid: str) -> list[dict[str, Any]]:
    """Every email of one message with its delivery status (`securesend emails GUID`)."""
    rows = session.scalars(
        select(OutboxEmail)
        .join(Message, Message.id == OutboxEmail.message_id)
        .where(Message.guid == message_guid, OutboxEmail.channel == Channel.EMAIL)
        .order_by(OutboxEmail.id)
    ).all()
    return [
        {
            "id": row.id,
            "kind": row.kind.value,
            "recipient": row.recipient,
            "status": row.status.value,
            "attempts": row.attempts,
            "messageId": row.message_id_header,
            "lastError": row.last_error,
            "sentAt": row.sent_at.isoformat() if row.sent_at else None,
        }
        for row in rows
    ]


def drain(
    database: Database,
    delivery: Delivery,
    *,
    keys: Keys,
    settings: Settings,
    now: Callable[[], datetime],
    budget_seconds: float,
    claimed_by: str | None = None,
    between_batches: Callable[[], None] = lambda: None,
) -> DeliveryReport:
    """Deliver the due emails, a batch at a time, until none is left or the time budget is
    spent; each recorded as it goes (`between_batches()` before each batch). No
    transaction is open while the transport talks to the server. Transient failures are
    recorded as `retrying` with the time of the next attempt (in the report's
    `retry_in`), permanent ones and the last allowed attempt as `failed` with the
    server's reply; emails the pace held (worker.domain.pace) go back unattempted as
    `deferred` (in `deferred`)."""
    report = DeliveryReport()
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        between_batches()
        claimed = _deliver_batch(
            database,
            delivery,
            keys=keys,
            settings=settings,
            now=now,
            claimed_by=claimed_by,
            report=report,
            deadline=deadline,
        )
        if not claimed or report.paced_out:
            break
    return report


# --- The second transport: webhook events ------------------------------------------------

# The span of one webhook delivery attempt, in the trace of what raised the event.
WEBHOOK_SPAN = "securesend.webhook.deliver"
# Attempts a webhook drain makes at once: one slow endpoint (up to its timeout) must not
# hold the others back.
WEBHOOK_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class _Endpoint:
    id: int
    uid: str
    url: str
    signing_secrets: tuple[str, ...]  # the current one, then the previous during a rotation
    disabled: bool
    failing_since: datetime | None


_ENDPOINTS = table(WebhookEndpoint)


def _endpoints(
    connection: Connection, ids: set[int], keys: Keys, now: datetime
) -> dict[int, _Endpoint]:
    rows = connection.execute(select(_ENDPOINTS).where(_ENDPOINTS.c.id.in_(sorted(ids)))).all()
    found = {}
    for row in rows:
        signing = [keys.unseal(row.sealed_secret)]
        if row.sealed_previous_secret and row.previous_until and row.previous_until > now:
            signing.append(keys.unseal(row.sealed_previous_secret))
        found[row.id] = _Endpoint(
            row.id, row.uid, row.url, tuple(signing), row.disabled_at is not None, row.failing_since
        )
    return found


_RECORD_ENDPOINT = update(_ENDPOINTS).where(_ENDPOINTS.c.id == bindparam("endpoint_id"))


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """What a webhook drain delivers with: the process's HTTP poster (worker.transports)
    and the policy its settings give."""

    poster: webhooks.WebhookPoster
    policy: RetryPolicy
    disable_after: timedelta


def drain_webhooks(
    database: Database,
    delivery: WebhookDelivery,
    *,
    keys: Keys,
    now: Callable[[], datetime],
    budget_seconds: float,
    lease: timedelta,
    claimed_by: str | None = None,
    between_batches: Callable[[], None] = lambda: None,
) -> DeliveryReport:
    """Deliver the due webhook events, a batch at a time, `WEBHOOK_CONCURRENCY` at once,
    until none is left or the time budget is spent; each outcome recorded as an email's
    is (sent, retrying on the schedule, failed); `between_batches()` before each batch.
    No transaction is open while an endpoint is called."""
    report = DeliveryReport()
    deadline = time.monotonic() + budget_seconds
    with ThreadPoolExecutor(WEBHOOK_CONCURRENCY, thread_name_prefix="webhook") as pool:
        while time.monotonic() < deadline:
            between_batches()
            rows = database.run_alone(
                lambda connection: claim(
                    connection,
                    now=now(),
                    max_attempts=delivery.policy.max_attempts,
                    lease=lease,
                    claimed_by=claimed_by,
                    channel=Channel.WEBHOOK,
                )
            )
            if not rows:
                break
            endpoints = database.run_alone(
                partial(_endpoints, ids={row.endpoint_id for row in rows}, keys=keys, now=now())
            )
            attempt = partial(
                _post_one,
                database,
                delivery,
                endpoints=endpoints,
                keys=keys,
                now=now,
                report=report,
                deadline=deadline,
                holder=claimed_by or "",
            )
            list(pool.map(attempt, rows))
    return report


def _post_one(
    database: Database,
    delivery: WebhookDelivery,
    row: Row[Any],
    *,
    endpoints: dict[int, _Endpoint],
    keys: Keys,
    now: Callable[[], datetime],
    report: DeliveryReport,
    deadline: float,
    holder: str,
) -> None:
    """One attempt to deliver one event to its endpoint, as a span in the trace of what
    raised it, and its outcome recorded; nothing if the row was taken over meanwhile."""
    fence = Fence(holder, row.attempts)
    endpoint = endpoints.get(row.endpoint_id)
    if endpoint is None or endpoint.disabled:
        outcome = {"status": EmailStatus.FAILED, "last_error": "endpoint disabled"}
        _through_outage(database, lambda c: _record(c, row.id, fence, **outcome))
        report.failed.append(row.id)
        return
    if time.monotonic() >= deadline:
        back = {
            "email_id": row.id,
            **fence.params(),
            "attempts": row.attempts - 1,
            "next_attempt_at": now(),
        }
        _through_outage(database, lambda c: _record_many(c, [back]))
        report.deferred[row.id] = 0.0
        return
    if not still_held(database, row.id, fence):
        return
    with telemetry.span(
        WEBHOOK_SPAN,
        traceparent=row.trace_parent,
        attributes={
            "securesend.webhook.delivery": row.id,
            "securesend.webhook.endpoint": endpoint.uid,
            "securesend.webhook.event": row.template,
            "securesend.webhook.attempt": row.attempts,
        },
    ) as span:
        verdict = _attempt(delivery.poster, endpoint, row, keys=keys, at=now())
        span.set_attribute("securesend.webhook.outcome", verdict.outcome)
    _record_verdict(
        database, delivery, endpoint, row, verdict, fence=fence, now=now(), report=report
    )


def _attempt(
    poster: webhooks.WebhookPoster, endpoint: _Endpoint, row: Row[Any], *, keys: Keys, at: datetime
) -> webhooks.Verdict:
    body = keys.unseal(row.sealed_content).encode()
    headers = webhooks.signed_headers(
        endpoint.signing_secrets, msg_id=row.message_id_header, at=at, body=body
    )
    try:
        reply = poster.post(endpoint.url, headers=headers, body=body)
    except webhooks.WebhookRefused as e:
        return webhooks.Verdict("disable", e.reason)
    except webhooks.WebhookUnreachable as e:
        return webhooks.Verdict("retry", e.reason)
    return webhooks.judge(reply)


def _record_verdict(
    database: Database,
    delivery: WebhookDelivery,
    endpoint: _Endpoint,
    row: Row[Any],
    verdict: webhooks.Verdict,
    *,
    fence: Fence,
    now: datetime,
    report: DeliveryReport,
) -> None:
    """Record an attempt's outcome, and the endpoint's state: healthy again, failing
    since its first failure, or disabled (a 410, a refused address, failing for
    `disable_after`), in one transaction."""
    outcome: dict[str, Any]
    disable: str | None = None
    if verdict.outcome == "sent":
        outcome = {"status": EmailStatus.SENT, "sent_at": now, "last_error": None}
        report.sent.append(row.id)
    elif verdict.outcome == "disable":
        outcome = {"status": EmailStatus.FAILED, "last_error": verdict.reason}
        disable = verdict.reason
        report.failed.append(row.id)
    elif row.attempts >= delivery.policy.max_attempts:
        outcome = {"status": EmailStatus.FAILED, "last_error": verdict.reason}
        report.failed.append(row.id)
    else:
        wait = delivery.policy.delay(row.attempts)
        if verdict.retry_after is not None:
            wait = min(max(verdict.retry_after, 1.0), delivery.policy.max_seconds or wait)
        outcome = {
            "status": EmailStatus.RETRYING,
            "last_error": verdict.reason,
            "next_attempt_at": now + timedelta(seconds=wait),
        }
        report.retry_in[row.id] = wait
    failing = verdict.outcome != "sent"
    since = (endpoint.failing_since or now) if failing else None
    if disable is None and since is not None and now - since >= delivery.disable_after:
        disable = f"failing since {since.isoformat()}"

    def record(connection: Connection) -> None:
        _record(connection, row.id, fence, **outcome)
        if disable is not None:
            if webhooks.disable_endpoint(connection, endpoint.id, reason=disable, now=now):
                # The group's operator is told: this line, and /metrics' disabled endpoints.
                logger.warning(
                    "webhook endpoint %s (%s) disabled: %s",
                    endpoint.uid,
                    webhooks.url_for_logs(endpoint.url),
                    disable,
                    extra={"endpoint": endpoint.uid},
                )
        elif since != endpoint.failing_since:
            connection.execute(
                _RECORD_ENDPOINT, {"endpoint_id": endpoint.id, "failing_since": since}
            )

    _through_outage(database, record, together=True)

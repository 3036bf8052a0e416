"""What a successful send writes, in as few round trips as the database allows.

`worker.domain.send` decides everything a send changes (the message marked sent, each
recipient bound to its user, a delivery per recipient, the emails, the job's answer) and
gathers it in a `SendWrites`; `write_send` writes it. On PostgreSQL that is one statement,
data-modifying CTEs over arrays (`unnest`), sent through SQLAlchemy's connection so that a
lost connection is the same `DATABASE_UNAVAILABLE` as anywhere else, which also makes the
quota claim rule 22 left to it (a send that invites nobody) and writes nothing when that
claim fails; on SQLite, one Core statement per table, as before. Both run in the send's
own transaction, before its one commit (docs/performance.md, issue 17: five round trips
became one, then the quota claim joined it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.orm import Session

from worker.domain.rules import QuotaClaim
from worker.models import (
    Delivery,
    Lane,
    Message,
    MessageStatus,
    OutboxEmail,
    Recipient,
    RecipientKind,
    SendJob,
    table,
)


@dataclass(frozen=True, slots=True)
class SentMessage:
    """The message's columns once sent (`password_hash` only for a UniquePassword send)."""

    message_id: int
    sender_id: int  # a delivery to the sender is `from_self`
    sent_at: datetime
    send_response: dict[str, Any]
    search_text: str | None
    search_bcc: str | None
    password_hash: str | None
    expires_at: datetime | None  # its deliveries expire with it


@dataclass(frozen=True, slots=True)
class SendWrites:
    message: SentMessage
    bindings: list[tuple[int, int]]  # (recipient id, user id), every recipient row
    deliveries: list[tuple[int, RecipientKind]]  # (user id, kind), one per distinct address
    emails: list[dict[str, Any]]  # outbox rows (worker.domain.emails.OutboxWriter)
    job_id: str
    job: dict[str, Any]  # the job's answer (worker.domain.send.job_outcome_values)
    # Rule 22's claim, when it left it to these writes (only where `claims_quota`).
    quota: QuotaClaim | None = None


@dataclass(frozen=True, slots=True)
class Written:
    claimed: bool  # False: the quota claim failed and nothing was written
    job_recorded: bool  # False: no job row yet (a job enqueued without HTTP)
    email_ids: tuple[int, ...]


def claims_quota(session: Session) -> bool:
    """Whether `write_send` can make a send's quota claim (PostgreSQL)."""
    return session.get_bind().dialect.name == "postgresql"


def write_send(session: Session, writes: SendWrites) -> Written:
    """Write `writes` in the session's transaction: all of them, or none when the quota
    claim they carry fails."""
    if claims_quota(session):
        return _write_in_one_statement(session, writes)
    if writes.quota is not None:
        raise ValueError("this database claims the quota in rule 22")
    return _write_table_by_table(session, writes)


# --- PostgreSQL: one statement ----------------------------------------------------------

# Every sub-statement sees the same snapshot and none reads what another writes, so the
# order they run in does not matter, but for the quota claim: `go` has its row when the
# writes carry no claim or the claim was made, and every write happens only then. The
# claim is rule 22's (worker.domain.rules._claim_statement): added to today's counters
# only while they stay within the limits, checked against the latest counts under the
# row's lock. Arrays keep the statement's text (and its prepared plan) the same whatever
# the number of recipients and emails.
_SEND_STATEMENT = """
WITH claimed AS (
    INSERT INTO daily_usage (user_id, day, messages_sent, invites_sent)
    SELECT %(claim_user_id)s, %(claim_day)s, %(claim_messages_sent)s, %(claim_invites_sent)s
    WHERE %(claim)s
    ON CONFLICT (user_id, day) DO UPDATE
    SET messages_sent = daily_usage.messages_sent + excluded.messages_sent,
        invites_sent = daily_usage.invites_sent + excluded.invites_sent
    WHERE daily_usage.messages_sent + excluded.messages_sent <= %(claim_max_messages)s
      AND daily_usage.invites_sent + excluded.invites_sent <= %(claim_max_invites)s
    RETURNING 1
), go AS (
    SELECT 1 WHERE NOT %(claim)s OR EXISTS (SELECT 1 FROM claimed)
), sent AS (
    UPDATE messages
    SET status = %(status)s, sent_at = %(sent_at)s, send_response = %(send_response)s::json,
        search_text = %(search_text)s, search_bcc = %(search_bcc)s,
        password_hash = COALESCE(%(password_hash)s, password_hash)
    WHERE id = %(message_id)s AND EXISTS (SELECT 1 FROM go)
), bound AS (
    UPDATE recipients AS r SET user_id = b.user_id
    FROM unnest(%(recipient_ids)s::bigint[], %(recipient_user_ids)s::bigint[]) AS b(id, user_id)
    WHERE r.id = b.id AND EXISTS (SELECT 1 FROM go)
), delivered AS (
    INSERT INTO deliveries (message_id, user_id, kind, created_at, expires_at, recalled,
                            from_self)
    SELECT %(message_id)s, d.user_id, d.kind, %(sent_at)s, %(expires_at)s, false,
           d.user_id = %(sender_id)s
    FROM unnest(%(delivery_user_ids)s::bigint[], %(delivery_kinds)s::text[]) AS d(user_id, kind)
    WHERE EXISTS (SELECT 1 FROM go)
), emailed AS (
    INSERT INTO outbox (message_id, kind, recipient, message_id_header, template,
                        sealed_content, status, last_error, attempts, created_at,
                        next_attempt_at, trace_parent, lane, channel, endpoint_id,
                        webhook_group_id)
    SELECT %(message_id)s, e.kind, e.recipient, e.header, e.template, e.sealed,
           e.status, e.reason, 0, %(sent_at)s, %(sent_at)s, e.trace_parent, %(lane)s,
           e.channel, e.endpoint_id, e.group_id
    FROM unnest(%(email_kinds)s::text[], %(email_recipients)s::text[],
                %(email_headers)s::text[], %(email_templates)s::text[],
                %(email_sealed)s::text[], %(email_statuses)s::text[],
                %(email_reasons)s::text[], %(email_trace_parents)s::text[],
                %(email_channels)s::smallint[], %(email_endpoints)s::integer[],
                %(email_groups)s::integer[])
         AS e(kind, recipient, header, template, sealed, status, reason, trace_parent,
              channel, endpoint_id, group_id)
    WHERE EXISTS (SELECT 1 FROM go)
    RETURNING id
), job AS (
    UPDATE send_jobs
    SET status = %(job_status)s, http_status = %(http_status)s, result_code = %(result_code)s,
        response = %(response)s::json, started_at = %(started_at)s,
        finished_at = %(finished_at)s
    WHERE id = %(job_id)s AND EXISTS (SELECT 1 FROM go)
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM go), (SELECT count(*) FROM job),
       ARRAY(SELECT id FROM emailed ORDER BY id)
"""


def _claim_params(claim: QuotaClaim | None) -> dict[str, Any]:
    """The statement's `claim_*` parameters: rule 22's (`QuotaClaim.params`), or none."""
    names = QuotaClaim.PARAMS
    if claim is None:
        return {"claim": False, **{f"claim_{name}": None for name in names}}
    return {"claim": True, **{f"claim_{name}": value for name, value in claim.params().items()}}


def _write_in_one_statement(session: Session, writes: SendWrites) -> Written:
    message, job, emails = writes.message, writes.job, writes.emails
    lane = emails[0]["lane"] if emails else Lane.BULK
    for row in emails:  # what the statement takes as constants
        if (row["message_id"], row["created_at"], row["lane"]) != (
            message.message_id,
            message.sent_at,
            lane,
        ):
            raise ValueError("an email of this send with another message, time or lane")
    params = {
        "message_id": message.message_id,
        "sender_id": message.sender_id,
        "status": MessageStatus.SENT.value,
        "sent_at": message.sent_at,
        "send_response": json.dumps(message.send_response),
        "search_text": message.search_text,
        "search_bcc": message.search_bcc,
        "password_hash": message.password_hash,
        "expires_at": message.expires_at,
        "recipient_ids": [recipient_id for recipient_id, _ in writes.bindings],
        "recipient_user_ids": [user_id for _, user_id in writes.bindings],
        "delivery_user_ids": [user_id for user_id, _ in writes.deliveries],
        "delivery_kinds": [kind.value for _, kind in writes.deliveries],
        "email_kinds": [row["kind"].value for row in emails],
        "email_recipients": [row["recipient"] for row in emails],
        "email_headers": [row["message_id_header"] for row in emails],
        "email_templates": [row["template"] for row in emails],
        "email_sealed": [row["sealed_content"] for row in emails],
        # queued, or suppressed with its reason (worker.domain.suppressions)
        "email_statuses": [row["status"].value for row in emails],
        "email_reasons": [row["last_error"] for row in emails],
        "email_trace_parents": [row["trace_parent"] for row in emails],
        # an email, or a webhook event for an endpoint (worker.domain.webhooks)
        "email_channels": [int(row["channel"]) for row in emails],
        "email_endpoints": [row["endpoint_id"] for row in emails],
        "email_groups": [row["webhook_group_id"] for row in emails],
        "lane": int(lane),
        "job_id": writes.job_id,
        "job_status": job["status"].value,
        "http_status": job["http_status"],
        "result_code": job["result_code"],
        "response": json.dumps(job["response"]),
        "started_at": job["started_at"],
        "finished_at": job["finished_at"],
        **_claim_params(writes.quota),
    }
    claimed, jobs_updated, email_ids = (
        session.connection().exec_driver_sql(_SEND_STATEMENT, params).one()
    )
    return Written(claimed=claimed, job_recorded=jobs_updated > 0, email_ids=tuple(email_ids))


# --- SQLite (and any other database): a statement per table ------------------------------

_MESSAGES = table(Message)
_MARK_SENT = update(_MESSAGES).where(_MESSAGES.c.id == bindparam("sent_message_id"))
_BIND_RECIPIENT = (
    update(table(Recipient))
    .where(table(Recipient).c.id == bindparam("recipient_id"))
    .values(user_id=bindparam("bound_user_id"))
)
_INSERT_DELIVERIES = insert(table(Delivery))
_INSERT_EMAILS = insert(table(OutboxEmail)).returning(table(OutboxEmail).c.id)
RECORD_JOB = update(table(SendJob)).where(table(SendJob).c.id == bindparam("job_id"))


def _write_table_by_table(session: Session, writes: SendWrites) -> Written:
    connection, message = session.connection(), writes.message
    sent: dict[str, Any] = {
        "sent_message_id": message.message_id,
        "status": MessageStatus.SENT,
        "sent_at": message.sent_at,
        "send_response": message.send_response,
        "search_text": message.search_text,
        "search_bcc": message.search_bcc,
    }
    if message.password_hash is not None:
        sent["password_hash"] = message.password_hash
    connection.execute(_MARK_SENT, sent)
    connection.execute(
        _BIND_RECIPIENT,
        [
            {"recipient_id": recipient_id, "bound_user_id": user_id}
            for recipient_id, user_id in writes.bindings
        ],
    )
    connection.execute(
        _INSERT_DELIVERIES,
        [
            {
                "message_id": message.message_id,
                "user_id": user_id,
                "kind": kind,
                "created_at": message.sent_at,
                "expires_at": message.expires_at,
                "recalled": False,
                "from_self": user_id == message.sender_id,
            }
            for user_id, kind in writes.deliveries
        ],
    )
    email_ids = (
        tuple(connection.execute(_INSERT_EMAILS, writes.emails).scalars()) if writes.emails else ()
    )
    updated = connection.execute(RECORD_JOB, {"job_id": writes.job_id, **writes.job}).rowcount
    return Written(claimed=True, job_recorded=updated > 0, email_ids=email_ids)

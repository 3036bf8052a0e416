"""Bounces and complaints coming back (SPEC 8): whose email a report is about, and what
it says.

Every email leaves with its own return path when MAIL_BOUNCE_ADDRESS is set (VERP):
`bounces+<email id>-<tag>@domain`, the tag an HMAC of the id under a key derived from
SECRET_KEY, so an address names one email, cannot be guessed from another, and needs no
column to check. A report sent there is a DSN (RFC 3464, `multipart/report;
report-type=delivery-status`: a 5.x.x status is a hard bounce, 4.x.x or a delayed action
a soft one) or a complaint (ARF, RFC 5965, `report-type=feedback-report`); anything else
is not a report.
"""

from __future__ import annotations

import email
import email.policy
import hmac
from dataclasses import dataclass
from datetime import datetime
from email.message import Message

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.domain import metrics, webhooks
from worker.domain.secrets import Keys
from worker.domain.suppressions import suppress
from worker.models import EmailStatus, OutboxEmail, ReportKind

MAX_EMAIL_ID_DIGITS = 10
MAX_EMAIL_ID = 2**31 - 1  # outbox.id is an integer column


def return_path(bounce_address: str, email_id: int, keys: Keys) -> str:
    """The envelope sender of email `email_id`: MAIL_BOUNCE_ADDRESS tagged with it."""
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{email_id}-{keys.return_path_tag(email_id)}@{domain}"


def email_of(bounce_address: str, address: str, keys: Keys) -> int | None:
    """The email a return path names, or None for an address that is not one of ours
    (another domain or local part, a malformed or forged tag)."""
    base_local, _, base_domain = bounce_address.rpartition("@")
    local, _, domain = address.strip().strip("<>").rpartition("@")
    prefix = base_local.lower() + "+"
    if domain.lower() != base_domain.lower() or not local.lower().startswith(prefix):
        return None
    number, _, tag = local[len(prefix) :].partition("-")
    if not number.isdigit() or len(number) > MAX_EMAIL_ID_DIGITS:
        return None
    email_id = int(number)
    if email_id > MAX_EMAIL_ID:
        return None
    if not hmac.compare_digest(tag.lower().encode(), keys.return_path_tag(email_id).encode()):
        return None
    return email_id


@dataclass(frozen=True, slots=True)
class Report:
    kind: ReportKind
    status: str  # the DSN's status (5.1.1), or the complaint's feedback type (abuse)
    diagnostic: str  # the remote server's words, as the DSN quotes them

    @property
    def reason(self) -> str:
        """How a delivery record says it."""
        what = "complaint" if self.kind == "complaint" else f"{self.kind} bounce"
        return " ".join(part for part in (what + ":", self.status, self.diagnostic) if part)


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    return (
        [block for block in payload if isinstance(block, Message)]
        if isinstance(payload, list)
        else []
    )


def _delivery_status(part: Message) -> Report | None:
    for block in _blocks(part):
        status = str(block.get("Status", "")).strip()
        action = str(block.get("Action", "")).strip().lower()
        diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())[:500]
        if status[:1] == "5" and action != "delayed":
            return Report("hard", status, diagnostic)
        if status[:1] == "4" or action == "delayed":
            return Report("soft", status, diagnostic)
    return None


def _feedback(part: Message) -> Report:
    text = part.get_payload()
    fields = text if isinstance(text, str) else ""
    kind = next(
        (
            line.partition(":")[2].strip().lower()
            for line in fields.splitlines()
            if line.lower().startswith("feedback-type:")
        ),
        "abuse",
    )
    return Report("complaint", kind[:40], "")


def read_report(raw: bytes) -> Report | None:
    """What a report says, or None for anything that is not a DSN or an ARF complaint."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    except (ValueError, TypeError, IndexError):
        return None
    if message.get_content_type() != "multipart/report":
        return None
    report_type = str(message.get_param("report-type", "") or "").lower()
    for part in message.walk():
        content_type = part.get_content_type()
        if report_type == "delivery-status" and content_type == "message/delivery-status":
            return _delivery_status(part)
        if report_type == "feedback-report" and content_type == "message/feedback-report":
            return _feedback(part)
    return None


def _tell(session: Session, email_id: int, report: Report, *, now: datetime, keys: Keys) -> None:
    if report.kind == "complaint":
        event, details = webhooks.EMAIL_COMPLAINED, {"feedbackType": report.status}
    else:
        event = webhooks.EMAIL_BOUNCED
        details = {
            "bounceType": report.kind,
            "dsnStatus": report.status,
            "diagnostic": report.diagnostic,
        }
    webhooks.emit_for_email(
        session.connection(),
        email_id=email_id,
        event_type=event,
        status=EmailStatus.COMPLAINED if report.kind == "complaint" else EmailStatus.BOUNCED,
        at=now,
        keys=keys,
        **details,
    )


def record_report(
    session: Session,
    *,
    email_id: int,
    report: Report,
    now: datetime,
    suppression_days: int,
    soft_bounces: int,
    keys: Keys,
) -> bool:
    """Record `report` on email `email_id`'s delivery record (bounced or complained, with
    its reason) and suppress its address: a hard bounce for `suppression_days`, a
    complaint until removed, `soft_bounces` soft ones in a row (the address's latest
    emails) as a hard one; the email's group's webhook endpoints hear of it in the same
    transaction. False when there is no such email (pruned, or never sent)."""
    row = session.get(OutboxEmail, email_id, with_for_update=True)
    if row is None or row.status is EmailStatus.SUPPRESSED:
        return False
    status = EmailStatus.COMPLAINED if report.kind == "complaint" else EmailStatus.BOUNCED
    # /metrics' totals may have counted it as it was: they move with it.
    metrics.count_report(session, row, status=status, bounce=report.kind)
    row.status = status
    row.bounce, row.last_error, row.updated_at = report.kind, report.reason, now
    session.flush()
    if row.webhook_group_id is not None:  # its group's endpoints hear of it
        _tell(session, row.id, report, now=now, keys=keys)
    if report.kind == "complaint":
        suppress(session, row.recipient, source="complaint", reason=report.reason, now=now)
    elif report.kind == "hard":
        suppress(
            session,
            row.recipient,
            source="bounce",
            reason=report.reason,
            now=now,
            days=suppression_days,
        )
    else:
        latest = session.scalars(
            select(OutboxEmail.bounce)
            .where(OutboxEmail.recipient == row.recipient)
            .order_by(OutboxEmail.id.desc())
            .limit(soft_bounces)
        ).all()
        if len(latest) == soft_bounces and all(kind == "soft" for kind in latest):
            suppress(
                session,
                row.recipient,
                source="bounce",
                reason=f"{soft_bounces} soft bounces in a row, the last {report.reason}",
                now=now,
                days=suppression_days,
            )
    return True

"""The emails a send puts in the outbox: notifications and invitations (SPEC 3.2, 3.3).
worker.domain.delivery delivers them.

Each email is rendered when it is queued and stored sealed, with a stable Message-ID, so
delivery (and any retry) sends exactly these bytes. Rendering happens once per locale,
not once per recipient: the notification is recipient-neutral.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from functools import lru_cache
from typing import Any

from worker import telemetry
from worker.domain import webhooks
from worker.domain.attachments import AttachmentInfo
from worker.domain.drafts import Addressee, Draft, Person, Sender
from worker.domain.rendering import RenderedEmail, Renderer
from worker.domain.secrets import Keys
from worker.models import Channel, EmailKind, EmailStatus, FyeoType, Lane
from worker.settings import Settings

EXPIRY_FORMAT = "%Y-%m-%d %H:%M UTC"


def display_name(user: Person) -> str:
    name = f"{user.first_name} {user.last_name}".strip()
    return name or user.email


def sender_context(user: Person) -> dict[str, str]:
    return {"display_name": display_name(user), "email": user.email}


def message_url(settings: Settings, guid: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}/messages/{guid}"


def _size_text(size: int) -> str:
    """A file's size as people read it: "1 byte", "512 bytes", "1.4 KB", "25.0 MB"."""
    if size < 1000:
        return "1 byte" if size == 1 else f"{size} bytes"
    value = size / 1000
    for unit in ("KB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def notification_context(
    message: Draft,
    sender: Sender,
    settings: Settings,
    *,
    attachments: Sequence[AttachmentInfo] = (),
) -> dict[str, Any]:
    """What the notification templates read. Files are named with their sizes, never
    their content; a confidential message's files only counted (their names are no less
    telling than its subject)."""
    return {
        "sender": sender_context(sender),
        "attachments": {
            "count": len(attachments),
            "total_size": _size_text(sum(a.size for a in attachments)),
            "files": (
                []
                if message.confidential
                else [{"name": a.file_name, "size": _size_text(a.size)} for a in attachments]
            ),
        },
        "message": {
            "subject": message.subject,
            "confidential": message.confidential,
            "url": message_url(settings, message.guid),
            "expiry_date": (
                message.expiry_date.strftime(EXPIRY_FORMAT) if message.expiry_date else None
            ),
            "fyeo": message.fyeo_type is not FyeoType.DISABLED,
        },
    }


@lru_cache(maxsize=8)
def _message_id_domain(mail_from: str) -> str:
    """The domain of `MAIL_FROM`'s address, for the Message-IDs of the emails."""
    return parseaddr(mail_from)[1].rpartition("@")[2] or "securesend.local"


@dataclass
class OutboxWriter:
    """Renders a send's emails into outbox rows, sealed with `keys` (an invitation carries
    a registration token); the send writes `rows` with the rest of its changes
    (worker.domain.send_writes). Each row keeps the trace context of the span current when
    the writer was made (the send task's), when traces are on, so that its delivery
    continues the send's trace, and the send's lane: interactive emails are delivered
    first. With the group's webhook endpoints (`webhooks`), it queues their events of
    the send too (message.sent, email.suppressed), and marks each email with the group
    when an endpoint wants to hear of its outcome."""

    renderer: Renderer
    settings: Settings
    keys: Keys
    sender: Sender
    now: datetime
    lane: Lane = Lane.BULK
    # Addresses on the suppression list, with the reason: their emails are recorded as
    # `suppressed`, never rendered or sent (worker.domain.suppressions).
    suppressed: dict[str, str] = field(default_factory=dict)
    webhooks: Sequence[webhooks.Target] = ()
    rows: list[dict[str, Any]] = field(default_factory=list)
    trace_parent: str | None = field(default_factory=telemetry.current_traceparent)

    @property
    def _tells_outcomes(self) -> bool:
        """Whether an endpoint of the group wants to hear of an email's outcome."""
        return any(t.events & webhooks.EMAIL_OUTCOME_EVENTS for t in self.webhooks)

    @property
    def notified(self) -> bool:
        """Whether a notification was queued to anyone (SendMessage's notificationSent)."""
        return any(
            r["kind"] is EmailKind.NOTIFICATION and r["status"] is EmailStatus.QUEUED
            for r in self.rows
        )

    def _message_id(self) -> str:
        return f"<{uuid.uuid4().hex}@{_message_id_domain(self.settings.mail_from)}>"

    def _row(
        self,
        *,
        kind: EmailKind,
        template: str,
        to: Addressee,
        email: RenderedEmail | None,
        message: Draft | None,
    ) -> dict[str, Any]:
        """An outbox row for `email`; None for an address on the suppression list, whose
        row records that it was not sent, and why."""
        content = (
            {
                "subject": email.subject,
                "text": email.text,
                "html": email.html,
                "toName": display_name(to) if to.first_name or to.last_name else "",
            }
            if email is not None
            else {}
        )
        suppressed = self.suppressed.get(to.email) if email is None else None
        return {
            "message_id": message.id if message is not None else None,
            "kind": kind,
            "recipient": to.email,
            "message_id_header": self._message_id(),
            "template": template,
            "sealed_content": self.keys.seal(json.dumps(content)),
            "status": EmailStatus.QUEUED if suppressed is None else EmailStatus.SUPPRESSED,
            "last_error": suppressed,
            "attempts": 0,
            "created_at": self.now,
            "next_attempt_at": self.now,
            "trace_parent": self.trace_parent,
            "lane": self.lane,
            "channel": Channel.EMAIL,
            "endpoint_id": None,
            "webhook_group_id": self.sender.group.id if self._tells_outcomes else None,
        }

    def _event(self, event_type: str, data: dict[str, Any], message: Draft) -> None:
        event = webhooks.Event(
            event_type,
            data,
            self.now,
            message_id=message.id,
            trace_parent=self.trace_parent,
            lane=self.lane,
        )
        self.rows.extend(webhooks.rows_for(self.webhooks, event, keys=self.keys))

    def queue_events(self, message: Draft, *, recipients: int) -> None:
        """The send's events for the group's webhook endpoints: `email.suppressed` for
        each email not sent to a suppressed address, then `message.sent`."""
        if not self.webhooks:
            return
        emails = [r for r in self.rows if r["channel"] is Channel.EMAIL]
        suppressed = [r for r in emails if r["status"] is EmailStatus.SUPPRESSED]
        for row in suppressed:
            data = webhooks.email_data(
                message_guid=message.guid,
                email=row["recipient"],
                kind=row["kind"].value,
                message_id=row["message_id_header"],
                status=EmailStatus.SUPPRESSED.value,
                at=self.now,
                reason=row["last_error"],
            )
            self._event(webhooks.EMAIL_SUPPRESSED, data, message)
        sent = webhooks.message_sent(
            message_guid=message.guid,
            sender_guid=self.sender.guid,
            at=self.now,
            recipients=recipients,
            emails=len(emails) - len(suppressed),
            suppressed=len(suppressed),
        )
        self._event(webhooks.MESSAGE_SENT, sent, message)

    def queue_notifications(
        self,
        message: Draft,
        recipients: list[Addressee],
        *,
        context: dict[str, Any],
        rendered: dict[str, RenderedEmail] | None = None,
    ) -> None:
        """One notification email per recipient, rendered from `context`
        (`notification_context`) once per recipient locale (`rendered` holds what the
        caller already rendered, by locale)."""
        by_locale: dict[str, RenderedEmail] = dict(rendered or {})
        rows = []
        for user in recipients:
            email = None  # an address on the suppression list gets none
            if user.email not in self.suppressed:
                email = by_locale.get(user.locale)
                if email is None:
                    email = by_locale[user.locale] = self.renderer.render(
                        "notification", context, locale=user.locale, group=self.sender.group.name
                    )
            rows.append(
                self._row(
                    kind=EmailKind.NOTIFICATION,
                    template="notification",
                    to=user,
                    email=email,
                    message=message,
                )
            )
        self.rows.extend(rows)

    def queue_invitations(
        self, message: Draft, invitations: list[tuple[Addressee, str]], *, cra_required: bool
    ) -> None:
        """One invitation email per (invitee, registration URL), in one INSERT. Each is
        rendered on its own: the URL carries the invitee's token."""
        rows = []
        for invitee, registration_url in invitations:
            email = None  # an address on the suppression list gets none
            if invitee.email not in self.suppressed:
                context = {
                    "sender": sender_context(self.sender),
                    "registration_url": registration_url,
                    "cra_required": cra_required,
                }
                email = self.renderer.render(
                    "invitation", context, locale=invitee.locale, group=self.sender.group.name
                )
            rows.append(
                self._row(
                    kind=EmailKind.INVITATION,
                    template="invitation",
                    to=invitee,
                    email=email,
                    message=message,
                )
            )
        self.rows.extend(rows)

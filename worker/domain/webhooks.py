"""Webhooks (SPEC 8): a sender group's endpoints, the events they hear of, and what one
delivery attempt's reply means. Delivery itself is the outbox's (worker.domain.delivery):
an event for an endpoint is an outbox row on the webhook channel, claimed, attempted,
retried and recorded as an email is; only the transport differs (an HTTP POST, signed
per Standard Webhooks with the `standardwebhooks` package).

An event is a small JSON body, `{type, timestamp, data}`, of ids, codes and times: never a
subject, body, password, CRA code or token, and an address only where the event is about
one (the email events). It is stored sealed, as emails are. docs/webhooks/ has each
event's JSON schema.

A group that has no endpoints costs nothing: the send reads the events its endpoints want
with the group (`groups.webhook_events`, kept here whenever an endpoint changes), and an
email carries its group's id (`outbox.webhook_group_id`) only when that group wanted an
email event, so that its outcomes are looked up only then.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from worker.domain.secrets import Keys
from worker.models import (
    PENDING_EMAIL,
    Channel,
    EmailKind,
    EmailStatus,
    Group,
    Lane,
    Message,
    OutboxEmail,
    WebhookEndpoint,
    table,
)

MESSAGE_SENT = "message.sent"
MESSAGE_RECALLED = "message.recalled"
EMAIL_SENT = "email.sent"
EMAIL_BOUNCED = "email.bounced"
EMAIL_COMPLAINED = "email.complained"
EMAIL_FAILED = "email.failed"
EMAIL_SUPPRESSED = "email.suppressed"
EVENTS = (
    MESSAGE_SENT,
    EMAIL_SENT,
    EMAIL_BOUNCED,
    EMAIL_COMPLAINED,
    EMAIL_FAILED,
    EMAIL_SUPPRESSED,
    MESSAGE_RECALLED,
)
# The events an email's delivery record raises after the send (at delivery, or when a
# report comes back): the email carries its group only when one of them is wanted.
EMAIL_OUTCOME_EVENTS = frozenset({EMAIL_SENT, EMAIL_BOUNCED, EMAIL_COMPLAINED, EMAIL_FAILED})

SECRET_PREFIX = "whsec_"
# During a rotation the previous secret signs too, for this long (receivers move over).
ROTATION_OVERLAP = timedelta(hours=24)

_ENDPOINTS, _GROUPS = table(WebhookEndpoint), table(Group)
_OUTBOX, _MESSAGES = table(OutboxEmail), table(Message)


def parse_events(events: str | Iterable[str]) -> tuple[str, ...]:
    """Event types, as a list or comma-separated, in the order of `EVENTS`; `*` is all of
    them. Raises ValueError naming an unknown one, or when there are none."""
    names = [e.strip() for e in (events.split(",") if isinstance(events, str) else events)]
    names = [n for n in names if n]
    if "*" in names:
        return EVENTS
    unknown = sorted(set(names) - set(EVENTS))
    if unknown:
        raise ValueError(f"unknown webhook events {unknown}; known: {', '.join(EVENTS)}")
    if not names:
        raise ValueError("an endpoint needs at least one event")
    return tuple(e for e in EVENTS if e in names)


def new_secret() -> str:
    """A fresh endpoint secret, `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str) -> str:
    """`secret` if it is a Standard Webhooks secret (`whsec_` and 24 to 64 bytes in
    base64); else ValueError, which never quotes it."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ and base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret holds 24 to 64 bytes")
    return secret


def check_url(url: str) -> str:
    """`url` if it is an absolute http(s) URL with a host; else ValueError. Whether its
    host is public is the transport's to check (worker.transports), when it connects."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("a webhook URL is http://… or https://… with a host")
    if parts.username or parts.password:
        raise ValueError("a webhook URL carries no credentials; the signature authenticates")
    return url


def url_for_logs(url: str) -> str:
    """The scheme, host and port of `url`: its path and query may carry a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- Endpoints ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointView:
    """An endpoint as operators list it (no secret)."""

    uid: str
    group: str
    url: str
    events: tuple[str, ...]
    created_at: datetime
    failing_since: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None
    rotating_until: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.uid,
            "group": self.group,
            "url": self.url,
            "events": list(self.events),
            "createdAt": self.created_at.isoformat(),
            "failingSince": self.failing_since.isoformat() if self.failing_since else None,
            "disabledAt": self.disabled_at.isoformat() if self.disabled_at else None,
            "disabledReason": self.disabled_reason,
            "previousSecretUntil": self.rotating_until.isoformat() if self.rotating_until else None,
        }


def _view(endpoint: WebhookEndpoint, group: str) -> EndpointView:
    return EndpointView(
        uid=endpoint.uid,
        group=group,
        url=endpoint.url,
        events=parse_events(endpoint.events),
        created_at=endpoint.created_at,
        failing_since=endpoint.failing_since,
        disabled_at=endpoint.disabled_at,
        disabled_reason=endpoint.disabled_reason,
        rotating_until=endpoint.previous_until,
    )


def _group_named(session: Session, name: str) -> Group:
    group = session.scalars(select(Group).where(Group.name == name)).one_or_none()
    if group is None:
        raise ValueError(f"no group named {name!r}")
    return group


def refresh_group_events(connection: Connection, group_id: int) -> None:
    """Write the events the group's enabled endpoints want on the group's row, which the
    send reads (empty: it has none, and the send looks no further)."""
    rows = connection.scalars(
        select(_ENDPOINTS.c.events).where(
            _ENDPOINTS.c.group_id == group_id, _ENDPOINTS.c.disabled_at.is_(None)
        )
    ).all()
    wanted = {event for events in rows for event in parse_events(events)}
    events = ",".join(e for e in EVENTS if e in wanted)
    connection.execute(
        update(_GROUPS).where(_GROUPS.c.id == group_id).values(webhook_events=events)
    )


def add_endpoint(
    session: Session,
    *,
    group: str,
    url: str,
    events: str | Iterable[str],
    secret: str | None,
    keys: Keys,
    now: datetime,
) -> tuple[EndpointView, str | None]:
    """Register `url` for `group`'s `events`, or update the endpoint the group has at that
    URL: its events, and its secret when `secret` differs (the previous one signs too for
    `ROTATION_OVERLAP`). Adding enables it again if it was disabled. Returns the endpoint
    and the secret when this call made one up (None when `secret` was given)."""
    check_url(url)
    wanted = ",".join(parse_events(events))
    made_up = None
    if secret is None:
        secret = made_up = new_secret()
    check_secret(secret)
    owner = _group_named(session, group)
    endpoint = session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.group_id == owner.id, WebhookEndpoint.url == url
        )
    ).one_or_none()
    if endpoint is None:
        endpoint = WebhookEndpoint(
            uid="ep_" + secrets.token_hex(12),
            group_id=owner.id,
            url=url,
            events=wanted,
            sealed_secret=keys.seal(secret),
            created_at=now,
        )
        session.add(endpoint)
    else:
        endpoint.events = wanted
        if keys.unseal(endpoint.sealed_secret) != secret:
            _rotate(endpoint, secret, keys=keys, now=now)
        endpoint.disabled_at = endpoint.disabled_reason = endpoint.failing_since = None
    session.flush()
    refresh_group_events(session.connection(), owner.id)
    return _view(endpoint, owner.name), made_up


def _rotate(endpoint: WebhookEndpoint, secret: str, *, keys: Keys, now: datetime) -> None:
    endpoint.sealed_previous_secret = endpoint.sealed_secret
    endpoint.previous_until = now + ROTATION_OVERLAP
    endpoint.sealed_secret = keys.seal(secret)


def rotate_secret(
    session: Session, uid: str, *, secret: str | None, keys: Keys, now: datetime
) -> str:
    """Give endpoint `uid` a new secret (made up unless given); the previous one signs
    too for `ROTATION_OVERLAP`. Returns the new secret. ValueError for an unknown uid."""
    endpoint = _endpoint(session, uid)
    new = check_secret(secret) if secret is not None else new_secret()
    _rotate(endpoint, new, keys=keys, now=now)
    return new


def _endpoint(session: Session, uid: str) -> WebhookEndpoint:
    endpoint = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.uid == uid)).first()
    if endpoint is None:
        raise ValueError(f"no webhook endpoint {uid!r}")
    return endpoint


def list_endpoints(session: Session, *, group: str | None = None) -> list[EndpointView]:
    query = (
        select(WebhookEndpoint, Group.name)
        .join(Group, Group.id == WebhookEndpoint.group_id)
        .order_by(Group.name, WebhookEndpoint.id)
    )
    if group is not None:
        query = query.where(Group.name == group)
    return [_view(endpoint, name) for endpoint, name in session.execute(query).all()]


def remove_endpoint(session: Session, uid: str) -> bool:
    """Delete endpoint `uid` and its deliveries, pending or past; False if unknown."""
    endpoint = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.uid == uid)).first()
    if endpoint is None:
        return False
    session.execute(delete(OutboxEmail).where(OutboxEmail.endpoint_id == endpoint.id))
    session.delete(endpoint)
    session.flush()
    refresh_group_events(session.connection(), endpoint.group_id)
    return True


def disable_endpoint(
    connection: Connection, endpoint_id: int, *, reason: str, now: datetime
) -> bool:
    """Disable an endpoint (a 410, a refused address, failing for days): its pending
    events fail with `reason`, and it is sent no new ones until an operator adds it
    again. False if it was disabled already."""
    disabled = connection.execute(
        update(_ENDPOINTS)
        .where(_ENDPOINTS.c.id == endpoint_id, _ENDPOINTS.c.disabled_at.is_(None))
        .values(disabled_at=now, disabled_reason=reason)
        .returning(_ENDPOINTS.c.group_id)
    ).first()
    if disabled is None:
        return False
    connection.execute(
        update(_OUTBOX)
        .where(_OUTBOX.c.endpoint_id == endpoint_id, _OUTBOX.c.status.in_(PENDING_EMAIL))
        .values(
            status=EmailStatus.FAILED,
            last_error=f"endpoint disabled: {reason}",
            claimed_until=None,
            claimed_by=None,
            updated_at=now,
        )
    )
    refresh_group_events(connection, disabled.group_id)
    return True


def replay(
    session: Session,
    *,
    now: datetime,
    webhook_id: str | None = None,
    since: datetime | None = None,
    endpoint: str | None = None,
) -> int:
    """Queue again one delivery (`webhook_id`) or every delivery of events since `since`
    (of one `endpoint`, or all), whatever became of them, with their `webhook-id`s
    unchanged (receivers drop what they had) and a fresh count of attempts. Deliveries to
    a disabled endpoint are left alone: add it again first. Returns how many."""
    if (webhook_id is None) == (since is None):
        raise ValueError("replay one delivery (its webhook-id) or everything since a time")
    o = _OUTBOX.c
    chosen = [o.channel == Channel.WEBHOOK]
    chosen.append(o.message_id_header == webhook_id if webhook_id else o.created_at >= since)
    live = select(_ENDPOINTS.c.id).where(_ENDPOINTS.c.disabled_at.is_(None))
    if endpoint is not None:
        live = live.where(_ENDPOINTS.c.uid == endpoint)
    chosen.append(o.endpoint_id.in_(live))
    result = session.execute(
        update(_OUTBOX)
        .where(*chosen)
        .values(
            status=EmailStatus.QUEUED,
            attempts=0,
            next_attempt_at=now,
            last_error=None,
            claimed_until=None,
            claimed_by=None,
            updated_at=now,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- Events -------------------------------------------------------------------------------


def timestamp(at: datetime) -> str:
    """An event time as the bodies give it: ISO 8601 in UTC with milliseconds and `Z`."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Event:
    """One event to tell a group's endpoints of: its type, its data, its time, and what
    its delivery rows keep (the message, the trace, the lane)."""

    type: str
    data: dict[str, Any]
    at: datetime
    message_id: int | None = None
    trace_parent: str | None = None
    lane: int = Lane.BULK

    def body(self) -> str:
        return json.dumps(
            {"type": self.type, "timestamp": timestamp(self.at), "data": self.data},
            separators=(",", ":"),
        )


def message_sent(
    *,
    message_guid: str,
    sender_guid: str,
    at: datetime,
    recipients: int,
    emails: int,
    suppressed: int,
) -> dict[str, Any]:
    return {
        "messageGuid": message_guid,
        "senderGuid": sender_guid,
        "sentAt": timestamp(at),
        "recipients": recipients,
        "emailsQueued": emails,
        "emailsSuppressed": suppressed,
    }


def message_recalled(*, message_guid: str, sender_guid: str, at: datetime) -> dict[str, Any]:
    return {"messageGuid": message_guid, "senderGuid": sender_guid, "recalledAt": timestamp(at)}


def email_data(
    *,
    message_guid: str | None,
    email: str,
    kind: str,
    message_id: str,
    status: str,
    at: datetime,
    **details: Any,
) -> dict[str, Any]:
    """An email event's data: which email (its message, address, kind and Message-ID),
    its status and when, and the event's own details (reason, bounce type, DSN status)."""
    return {
        "messageGuid": message_guid,
        "email": email,
        "kind": kind,
        "emailMessageId": message_id,
        "status": status,
        "at": timestamp(at),
        **details,
    }


@dataclass(frozen=True, slots=True)
class Target:
    """An enabled endpoint of a group, as events are queued for it."""

    id: int
    uid: str
    events: frozenset[str]


_TARGETS = select(_ENDPOINTS.c.id, _ENDPOINTS.c.uid, _ENDPOINTS.c.events).where(
    _ENDPOINTS.c.disabled_at.is_(None)
)


def targets_of(connection: Connection, group_id: int) -> list[Target]:
    """The group's enabled endpoints and the events each wants."""
    rows = connection.execute(
        _TARGETS.where(_ENDPOINTS.c.group_id == group_id).order_by(_ENDPOINTS.c.id)
    ).all()
    return [Target(i, uid, frozenset(parse_events(events))) for i, uid, events in rows]


def webhook_id() -> str:
    """A delivery's `webhook-id`: the same on every attempt and replay of it, so that a
    receiver can drop one it has had."""
    return "msg_" + secrets.token_hex(16)


def rows_for(targets: Sequence[Target], event: Event, *, keys: Keys) -> list[dict[str, Any]]:
    """The outbox rows that deliver `event` to each of `targets` that wants it."""
    wanted = [t for t in targets if event.type in t.events]
    if not wanted:
        return []
    sealed = keys.seal(event.body())
    return [
        {
            "message_id": event.message_id,
            "kind": EmailKind.WEBHOOK,
            "channel": Channel.WEBHOOK,
            "endpoint_id": target.id,
            "webhook_group_id": None,
            "recipient": target.uid,
            "message_id_header": webhook_id(),
            "template": event.type,
            "sealed_content": sealed,
            "status": EmailStatus.QUEUED,
            "last_error": None,
            "attempts": 0,
            "created_at": event.at,
            "next_attempt_at": event.at,
            "trace_parent": event.trace_parent,
            "lane": event.lane,
        }
        for target in wanted
    ]


_INSERT_ROWS = table(OutboxEmail).insert()


def emit(connection: Connection, *, group_id: int, events: Sequence[Event], keys: Keys) -> int:
    """Queue `events` for the group's endpoints that want them, in the caller's
    transaction; returns how many deliveries were queued."""
    targets = targets_of(connection, group_id)
    rows = [row for event in events for row in rows_for(targets, event, keys=keys)]
    if rows:
        connection.execute(_INSERT_ROWS, rows)
    return len(rows)


_EMAIL_OF = (
    select(
        _OUTBOX.c.webhook_group_id,
        _OUTBOX.c.recipient,
        _OUTBOX.c.kind,
        _OUTBOX.c.message_id_header,
        _OUTBOX.c.message_id,
        _OUTBOX.c.trace_parent,
        _OUTBOX.c.lane,
        _MESSAGES.c.guid,
    )
    .select_from(_OUTBOX)
    .outerjoin(_MESSAGES, _MESSAGES.c.id == _OUTBOX.c.message_id)
)


def emit_for_email(
    connection: Connection,
    *,
    email_id: int,
    event_type: str,
    status: str,
    at: datetime,
    keys: Keys,
    **details: Any,
) -> int:
    """Queue `event_type` about email `email_id` for its group's endpoints (none when the
    email carries no group: its group had no endpoint that wanted an email event)."""
    row = connection.execute(_EMAIL_OF.where(_OUTBOX.c.id == email_id)).first()
    if row is None or row.webhook_group_id is None:
        return 0
    event = Event(
        type=event_type,
        data=email_data(
            message_guid=row.guid,
            email=row.recipient,
            kind=EmailKind(row.kind).value,
            message_id=row.message_id_header,
            status=status,
            at=at,
            **details,
        ),
        at=at,
        message_id=row.message_id,
        trace_parent=row.trace_parent,
        lane=row.lane,
    )
    return emit(connection, group_id=row.webhook_group_id, events=[event], keys=keys)


def emit_recalled(
    connection: Connection,
    *,
    message_id: int,
    message_guid: str,
    sender_guid: str,
    group_id: int,
    now: datetime,
    keys: Keys,
) -> int:
    """Queue `message.recalled` for the sender's group's endpoints that want it."""
    event = Event(
        type=MESSAGE_RECALLED,
        data=message_recalled(message_guid=message_guid, sender_guid=sender_guid, at=now),
        at=now,
        message_id=message_id,
    )
    return emit(connection, group_id=group_id, events=[event], keys=keys)


# --- One attempt --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookReply:
    """What an endpoint answered: its status, and `Retry-After` in seconds if it said."""

    status: int
    retry_after: float | None = None


class WebhookUnreachable(Exception):
    """No answer: the connection failed or timed out (retried)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WebhookRefused(Exception):
    """Not attempted and never will be: the URL's host is a private or loopback address
    and WEBHOOK_ALLOW_PRIVATE_NETWORKS is off (the endpoint is disabled)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WebhookPoster(Protocol):
    def post(self, url: str, *, headers: dict[str, str], body: bytes) -> WebhookReply: ...
    def close(self) -> None: ...


def signed_headers(
    signing_secrets: Sequence[str], *, msg_id: str, at: datetime, body: bytes
) -> dict[str, str]:
    """The Standard Webhooks headers: `webhook-id`, `webhook-timestamp` and one `v1,`
    signature per secret (two during a rotation), space-separated."""
    signatures = " ".join(Webhook(s).sign(msg_id, at, body) for s in signing_secrets)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a reply means for the delivery: sent, retry (after `retry_after` if the
    endpoint said), or disable the endpoint."""

    outcome: str  # sent | retry | disable
    reason: str
    retry_after: float | None = None


def judge(reply: WebhookReply) -> Verdict:
    """2xx: sent. 410 Gone: the endpoint is disabled. Anything else (429, 5xx, a
    redirect, which is never followed, another 4xx): tried again on the schedule, or
    after `Retry-After` when the endpoint says so."""
    status = reply.status
    if 200 <= status < 300:
        return Verdict("sent", f"{status}")
    if status == 410:
        return Verdict("disable", "410 Gone")
    what = "a redirect, not followed" if 300 <= status < 400 else "an error"
    return Verdict("retry", f"{status}: {what}", reply.retry_after)

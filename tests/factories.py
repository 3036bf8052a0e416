"""Worlds to test in: a sender in a group of its own, and helpers to build the situation
a test needs.

- `World` drives a live stack (`tests.support.Stack`) through HTTP: what a client sees.
- `DomainWorld` writes users, groups, sessions and messages straight through a session
  of a `Database` and sends by calling `worker.domain.send.send_message` in-process: no
  HTTP, no broker, no worker process.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tests.support import Stack, group_fixture
from worker.db import Database
from worker.domain import clock, jobs, webhooks
from worker.domain.auth import Caller, resolve_session
from worker.domain.fixtures import load_fixture_dict
from worker.domain.secrets import Keys, hash_password, new_token
from worker.domain.send import SendOutcome, SendRequest, send_message
from worker.models import (
    Base,
    Channel,
    Contact,
    DailyUsage,
    EmailStatus,
    FyeoType,
    Group,
    Message,
    MessageAction,
    MessageStatus,
    OutboxEmail,
    Recipient,
    RecipientKind,
    SendJob,
    User,
    UserSession,
    UserState,
    new_guid,
)
from worker.payloads import SendJobV1
from worker.settings import Settings

# --- through HTTP ---------------------------------------------------------------------------


@dataclass
class World:
    """A sender in a group of its own on a live stack, driven through HTTP."""

    stack: Stack
    tag: str
    features: dict[str, bool] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    banned: dict[str, list[str]] | None = None
    sender: str = ""
    password: str = ""
    token: str = ""

    @property
    def group(self) -> str:
        return f"group-{self.tag}"

    def setup(self) -> World:
        self.apply_group()
        self.sender, self.password = self.stack.make_user(self.tag, group=self.group)
        self.token = self.stack.login(self.sender, self.password)
        return self

    def apply_group(self, **features: bool) -> None:
        self.features.update(features)
        extra: dict[str, Any] = {"banned": self.banned} if self.banned is not None else {}
        self.stack.make_group(self.tag, features=self.features, **self.limits, **extra)

    def user(self, name: str, **fields: Any) -> str:
        return self.stack.make_user(self.tag, name=name, group=self.group, **fields)[0]

    def draft(self, **fields: Any) -> str:
        fields.setdefault("subject", "subject")
        fields.setdefault("body", "body")
        return self.stack.draft(self.token, **fields)

    def send(self, guid: str, **body: Any) -> httpx.Response:
        return self.stack.send(self.token, guid, **body)

    def sent_message(self, to: list[str], **options: Any) -> str:
        guid = self.draft(to=to, messageOptions=options) if options else self.draft(to=to)
        answer = self.send(guid)
        assert answer.status_code == 200, answer.text
        return guid

    def as_user(self, email: str, password: str) -> World:
        other = World(self.stack, self.tag, sender=email, password=password)
        other.token = self.stack.login(email, password)
        return other

    def delivery_records(self, guid: str) -> dict[str, dict[str, Any]]:
        """The sender's delivery records of message `guid`, by address (one email each)."""
        answer = self.stack.deliveries(self.token, guid)
        assert answer.status_code == 200, answer.text
        return {r["email"]: r for r in answer.json()["results"]}

    def hook(self, url: str, events: str | list[str] = "*", secret: str | None = None) -> str:
        """Register `url` as a webhook endpoint of the group (fixtures, as `securesend
        load` does); returns its secret."""
        secret = secret or webhooks.new_secret()
        hook = {"url": url, "events": events, "secret": secret}
        self.stack.load({"groups": [{"name": self.group, "webhooks": [hook]}]})
        return secret

    def endpoint_uid(self) -> str:
        """The uid of the group's one webhook endpoint."""
        with self.stack.database.read_session() as session:
            (endpoint,) = webhooks.list_endpoints(session, group=self.group)
        return endpoint.uid

    def webhook_rows(self) -> list[tuple[str, EmailStatus, int]]:
        """(event, status, attempts) of each delivery to the group's one endpoint, in the
        order queued."""
        with self.stack.database.read_session() as session:
            rows = session.execute(
                select(OutboxEmail.template, OutboxEmail.status, OutboxEmail.attempts)
                .where(
                    OutboxEmail.recipient == self.endpoint_uid(),
                    OutboxEmail.channel == Channel.WEBHOOK,
                )
                .order_by(OutboxEmail.id)
            ).all()
        return [(t, s, a) for t, s, a in rows]

    def settled_webhooks(self, timeout: float = 10.0) -> list[tuple[str, EmailStatus, int]]:
        """`webhook_rows` once there is one and none is pending any more (the receiver has
        a request before the worker records its answer)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.webhook_rows()
            settled = rows and all(
                status not in (EmailStatus.QUEUED, EmailStatus.RETRYING) for _, status, _ in rows
            )
            if settled or time.monotonic() > deadline:
                assert settled, rows
                return rows
            time.sleep(0.05)

    def files(self) -> Files:
        """The attachment operations as this world's sender."""
        return Files(self.stack, self.token)

    def quotas(self) -> dict[str, int]:
        with self.stack.client() as client:
            response = client.get("/api/v1/user/quotas", headers={"x-sm-session-token": self.token})
        assert response.status_code == 200, response.text
        return dict(response.json())


# Attachments (SPEC 9) through HTTP.
BOUNDARY = "----securesend-test-boundary"


def multipart(data: bytes, *, name: str = "upload", file: bool = True) -> tuple[bytes, str]:
    """A body as a browser or an SDK writes it: the chunk in a (file) part `name`."""
    filename = '; filename="blob"' if file else ""
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={BOUNDARY}"


@dataclass
class Files:
    """One user's calls to the attachment operations."""

    stack: Stack
    token: str

    def _headers(self, **more: str) -> dict[str, str]:
        return {"x-sm-session-token": self.token, **more}

    def precreate(self, guid: str, files: dict[str, int]) -> httpx.Response:
        body = {
            "messageGuid": guid,
            "attachmentPlaceholders": [
                {"fileName": name, "totalBytesLength": size} for name, size in files.items()
            ],
        }
        with self.stack.client() as client:
            return client.post("/api/v1/attachments/precreate", json=body, headers=self._headers())

    def placeholders(self, guid: str, files: dict[str, int]) -> list[dict[str, Any]]:
        answer = self.precreate(guid, files)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["attachmentPlaceholders"])

    def upload(self, attachment: str, number: int, data: bytes) -> httpx.Response:
        body, content_type = multipart(data)
        with self.stack.client() as client:
            return client.post(
                f"/api/v1/attachments/{attachment}/chunk/{number}",
                content=body,
                headers=self._headers(**{"Content-Type": content_type}),
            )

    def upload_all(self, placeholder: dict[str, Any], data: bytes) -> None:
        for chunk in placeholder["chunks"]:
            part = data[chunk["byteStartIndex"] : chunk["byteEndIndex"]]
            answer = self.upload(placeholder["attachmentGuid"], chunk["chunkNumber"], part)
            assert answer.status_code == 200, answer.text

    def remove(
        self, message: str, attachment: str, *, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        """RemoveAttachment; with `body`, the DELETE carries it as JSON (the Java SDK's)."""
        with self.stack.client() as client:
            return client.request(
                "DELETE",
                f"/api/v1/messages/{message}/attachments/{attachment}",
                headers=self._headers(),
                json=body,
            )

    def download(self, attachment: str, **headers: str) -> httpx.Response:
        with self.stack.client() as client:
            return client.get(
                f"/api/v1/attachments/{attachment}",
                headers=self._headers(Accept="application/json", **headers),
            )

    def message(self, guid: str, **headers: str) -> httpx.Response:
        with self.stack.client() as client:
            return client.get(f"/api/v1/messages/{guid}", headers=self._headers(**headers))


# --- in-process, on a session ---------------------------------------------------------------

Snapshot = dict[str, list[dict[str, Any]]]
SENDER_PASSWORD = "correct horse battery staple"


@cache
def _hash(password: str) -> str:
    return hash_password(password)


@dataclass
class DomainWorld:
    """A sender in a group of its own, written straight into `database`; sends run
    `send_message` in-process, in one transaction each, as the worker runs them."""

    database: Database
    settings: Settings
    tag: str
    now: datetime = field(default_factory=clock.now)
    features: dict[str, bool] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    banned: dict[str, list[str]] | None = None
    sender: str = ""
    password: str = ""
    _callers: dict[str, Caller] = field(default_factory=dict, repr=False)

    @property
    def group(self) -> str:
        return f"group-{self.tag}"

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.secret_key)

    # --- people -------------------------------------------------------------------------

    def setup(self) -> DomainWorld:
        self.apply_group()
        self.password = SENDER_PASSWORD
        self.sender = self.user("sender", password=self.password)
        self.login(self.sender)
        return self

    def load(self, data: dict[str, Any]) -> None:
        """`securesend load` of `data` (SPEC 5), in a transaction of its own."""
        with self.database.write_session() as session:
            load_fixture_dict(session, data, keys=self.keys, now=clock.now())

    def apply_group(self, **features: bool) -> None:
        """Create or update the group with `features`, `limits` and `banned`."""
        self.features.update(features)
        extra: dict[str, Any] = {"banned": self.banned} if self.banned is not None else {}
        self.load(
            {"groups": [group_fixture(self.group, features=self.features, **self.limits, **extra)]}
        )

    def update_group(self, **columns: Any) -> None:
        """Set columns of the group's row (`feature_fyeo=False`, `max_recipients=2`...)."""
        with self.database.write_session() as session:
            session.execute(update(Group).where(Group.name == self.group).values(**columns))

    def user(
        self,
        name: str,
        *,
        password: str | None = None,
        state: str = "active",
        contacts: list[str] | None = None,
    ) -> str:
        """A user of the group; returns its email. Without a password none is stored:
        recipients never log in here. (A password's argon2 hash is computed once per
        process: at 0.15 s each, hashing per test would cost most of the module's time.)"""
        email = f"{name}-{self.tag}-{secrets.token_hex(3)}@example.com"
        fixture: dict[str, Any] = {
            "email": email,
            "firstName": name.capitalize(),
            "lastName": "Test",
            "group": self.group,
            "state": state,
            "contacts": contacts or [],
        }
        self.load({"users": [fixture]})
        if password is not None:
            with self.database.write_session() as session:
                session.execute(
                    update(User).where(User.email == email).values(password_hash=_hash(password))
                )
        return email

    def add_contacts(self, owner: str, *emails: str) -> None:
        with self.database.write_session() as session:
            owner_id = self._user_id(session, owner)
            session.add_all(Contact(owner_id=owner_id, email=e.casefold()) for e in emails)

    def set_user_state(self, email: str, state: UserState) -> None:
        with self.database.write_session() as session:
            session.execute(update(User).where(User.email == email).values(state=state))

    def guid_of(self, email: str) -> str:
        with self.database.read_session() as session:
            return session.scalars(select(User.guid).where(User.email == email)).one()

    def login(self, email: str) -> Caller:
        """A session of the user's (its token stored only as a digest, as login does), and
        the caller it resolves to."""
        if email not in self._callers:
            token = self.new_session(email)
            with self.database.read_session() as session:
                self._callers[email] = resolve_session(
                    session.connection(),
                    token=token,
                    now=self.now,
                    idle=self.settings.session_idle,
                    keys=self.keys,
                )
        return self._callers[email]

    def new_session(self, email: str, *, last_seen_at: datetime | None = None) -> str:
        """A new session of the user's, last seen now unless said otherwise; its token."""
        token = new_token()
        with self.database.write_session() as session:
            session.add(
                UserSession(
                    token_hash=self.keys.token_digest(token),
                    user_id=self._user_id(session, email),
                    created_at=self.now,
                    last_seen_at=last_seen_at or self.now,
                )
            )
        return token

    @staticmethod
    def _user_id(session: Session, email: str) -> int:
        return session.scalars(select(User.id).where(User.email == email)).one()

    # --- messages -----------------------------------------------------------------------

    def draft(
        self,
        *,
        to: list[str] | None = None,
        cc: list[str] | None = None,
        bcc: list[str] | None = None,
        sender: str | None = None,
        action: MessageAction = MessageAction.NEW,
        parent: str | None = None,
        subject: str = "subject",
        body: str = "body",
        fyeo_type: FyeoType = FyeoType.DISABLED,
        **columns: Any,
    ) -> str:
        """A draft row of `sender` (the world's by default) with its recipients, as
        SaveMessage stores them but without its checks: any situation can be built.
        `columns` are other Message columns (confidential, expiry_date, allow_forward...)."""
        guid = new_guid()
        recipients = [
            (kind, address.strip())
            for kind, addresses in (
                (RecipientKind.TO, to),
                (RecipientKind.CC, cc),
                (RecipientKind.BCC, bcc),
            )
            for address in addresses or []
            if address.strip()
        ]
        with self.database.write_session() as session:
            parent_row = (
                session.scalars(select(Message).where(Message.guid == parent)).one()
                if parent is not None
                else None
            )
            session.add(
                Message(
                    guid=guid,
                    sender_id=self._user_id(session, sender or self.sender),
                    parent_id=parent_row.id if parent_row is not None else None,
                    conversation_guid=(
                        parent_row.conversation_guid or parent_row.guid
                        if parent_row is not None
                        else guid
                    ),
                    action=action,
                    status=MessageStatus.DRAFT,
                    subject=subject,
                    body=body,
                    fyeo_type=fyeo_type,
                    created_at=self.now,
                    saved_at=self.now,
                    recipients=[
                        Recipient(kind=kind, address=address, position=position)
                        for position, (kind, address) in enumerate(recipients)
                    ],
                    **columns,
                )
            )
        return guid

    def update_message(self, guid: str, **columns: Any) -> None:
        with self.database.write_session() as session:
            session.execute(update(Message).where(Message.guid == guid).values(**columns))

    def set_recipients(
        self, guid: str, *, to: list[str], cc: list[str] | None = None, bcc: list[str] | None = None
    ) -> None:
        """Replace a draft's recipients."""
        with self.database.write_session() as session:
            message = session.scalars(select(Message).where(Message.guid == guid)).one()
            session.execute(delete(Recipient).where(Recipient.message_id == message.id))
            addresses = (
                [(RecipientKind.TO, a) for a in to]
                + [(RecipientKind.CC, a) for a in cc or []]
                + [(RecipientKind.BCC, a) for a in bcc or []]
            )
            session.add_all(
                Recipient(message_id=message.id, kind=kind, address=address, position=position)
                for position, (kind, address) in enumerate(addresses)
            )

    def status_of(self, guid: str) -> MessageStatus:
        with self.database.read_session() as session:
            return session.scalars(select(Message.status).where(Message.guid == guid)).one()

    def sent_message(self, to: list[str], **columns: Any) -> str:
        guid = self.draft(to=to, **columns)
        outcome = self.send(guid)
        assert outcome.http_status == 200, outcome.body
        return guid

    def use_quota(self, *, messages: int = 0, invites: int = 0, sender: str | None = None) -> None:
        """Set what the sender has used today (the UTC day of `now`)."""
        with self.database.write_session() as session:
            user_id = self._user_id(session, sender or self.sender)
            day = self.now.date()
            session.execute(
                delete(DailyUsage).where(DailyUsage.user_id == user_id, DailyUsage.day == day)
            )
            session.add(
                DailyUsage(user_id=user_id, day=day, messages_sent=messages, invites_sent=invites)
            )

    def usage(self, sender: str | None = None) -> tuple[int, int]:
        """(messages, invites) the sender has used today."""
        with self.database.read_session() as session:
            row = session.execute(
                select(DailyUsage.messages_sent, DailyUsage.invites_sent)
                .join(User, User.id == DailyUsage.user_id)
                .where(User.email == (sender or self.sender), DailyUsage.day == self.now.date())
            ).one_or_none()
        return (row[0], row[1]) if row is not None else (0, 0)

    # --- sending ------------------------------------------------------------------------

    def send(
        self,
        guid: str,
        *,
        sender: str | None = None,
        sender_guid: str | None = None,
        password: str = "",
        cra_code: str = "",
        invite_new_users: bool = False,
        send_email_notification: bool = True,
        now: datetime | None = None,
    ) -> SendOutcome:
        """SendMessage as it happens in production, without HTTP or Celery: the job is
        opened for the sender's session (as the API does, one transaction), then sent in
        one transaction by `send_message` (as the worker does). With `sender_guid` (a
        sender that may not exist) no job is opened first."""
        job_id = new_guid()
        if sender_guid is None:
            caller = self.login(sender or self.sender)
            sender_guid = caller.user_guid
            payload = SendJobV1.for_send(
                job_id=job_id,
                sender_guid=sender_guid,
                message_guid=guid,
                password=password,
                cra_code=cra_code,
                invite_new_users=invite_new_users,
                send_email_notification=send_email_notification,
                keys=self.keys,
            )
            with self.database.write_session() as session:
                jobs.open_send_job(
                    session.connection(),
                    caller=caller,
                    job_id=job_id,
                    message_guid=guid,
                    payload=payload.model_dump(mode="json", by_alias=True),
                    lane=payload.lane,
                    now=now or self.now,
                )
        request = SendRequest(
            job_id=job_id,
            sender_guid=sender_guid,
            message_guid=guid,
            invite_new_users=invite_new_users,
            send_email_notification=send_email_notification,
            password=password,
            cra_code=cra_code,
        )
        with self.database.write_session() as session:
            return send_message(
                session,
                request=request,
                now=now or self.now,
                settings=self.settings,
                keys=self.keys,
            )

    def job(self, job_id: str) -> SendJob:
        with self.database.read_session() as session:
            return session.get_one(SendJob, job_id)

    # --- the whole database -------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Every row of every table, in primary-key order: compare two to see what a
        transaction changed."""
        rows: Snapshot = {}
        with self.database.read_session() as session:
            for table in Base.metadata.sorted_tables:
                rows[table.name] = [
                    dict(row._mapping)
                    for row in session.execute(select(table).order_by(*table.primary_key.columns))
                ]
        return rows

"""SendMessage end to end: HTTP -> queue -> live worker -> database -> HTTP answer,
on the embedded default and on PostgreSQL + Redis."""

from __future__ import annotations

import json
from typing import Any

import redis
from sqlalchemy import func, select

from tests.support import Stack
from worker.models import (
    DailyUsage,
    Delivery,
    EmailKind,
    Invitation,
    Message,
    MessageStatus,
    OutboxEmail,
    Recipient,
    SendJob,
    User,
    UserState,
)


def _outbox(stack: Stack, guid: str) -> list[tuple[OutboxEmail, dict[str, Any]]]:
    with stack.database.read_session() as session:
        rows = session.scalars(
            select(OutboxEmail)
            .join(Message, Message.id == OutboxEmail.message_id)
            .where(Message.guid == guid)
            .order_by(OutboxEmail.id)
        ).all()
        return [(row, json.loads(stack.keys.unseal(row.sealed_content))) for row in rows]


def test_send_delivers_binds_recipients_and_renders_notification(stack: Stack, unique: str) -> None:
    sender, password = stack.make_user(unique, firstName="Alice", lastName="Sender")
    bob, _ = stack.make_user(unique, name="bob", firstName="Bob", lastName="Reader")
    token = stack.login(sender, password)
    guid = stack.draft(
        token,
        to=[bob.upper()],
        cc=[bob],  # the same person twice: one delivery, one email
        subject="Quarterly <figures> & notes",
        body="The secret body",
    )

    response = stack.send(token, guid)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["responseStatus"] is None
    assert body["notificationSent"] is True
    text, html = body["notificationBodyText"], body["notificationBodyHtml"]
    assert "Alice Sender" in text and "Quarterly <figures> & notes" in text
    assert f"https://securesend.test/messages/{guid}" in text
    assert "The secret body" not in text and "The secret body" not in html
    assert "Quarterly &lt;figures&gt; &amp; notes" in html  # Html is autoescaped
    assert "<style" not in html and 'style="' in html  # CSS inlined

    with stack.database.read_session() as session:
        message = session.scalars(select(Message).where(Message.guid == guid)).one()
        assert message.status is MessageStatus.SENT and message.sent_at is not None
        assert message.send_response == body
        bob_user = session.scalars(select(User).where(User.email == bob)).one()
        recipients = session.scalars(select(Recipient).where(Recipient.message_id == message.id))
        assert {r.user_id for r in recipients} == {bob_user.id}
        deliveries = session.scalars(select(Delivery).where(Delivery.message_id == message.id))
        assert [d.user_id for d in deliveries] == [bob_user.id]
        usage = session.scalars(
            select(DailyUsage).where(DailyUsage.user_id == message.sender_id)
        ).one()
        assert (usage.messages_sent, usage.invites_sent) == (1, 0)
        job = session.scalars(select(SendJob).where(SendJob.message_guid == guid)).one()
        assert (job.status.value, job.http_status, job.response) == ("succeeded", 200, body)

    emails = _outbox(stack, guid)
    assert [(row.kind, row.recipient) for row, _ in emails] == [(EmailKind.NOTIFICATION, bob)]
    assert emails[0][0].status.value in ("queued", "sent")  # the mail worker may be done already
    row, content = emails[0]
    assert row.message_id_header.startswith("<") and row.message_id_header.endswith(">")
    assert content["subject"] == "Secure message from Alice Sender: Quarterly <figures> & notes"
    assert content["text"] == text and content["html"] == html
    assert "Quarterly" not in row.sealed_content  # stored sealed, not in plain text


def test_second_send_answers_the_stored_response_and_changes_nothing(
    stack: Stack, unique: str
) -> None:
    sender, password = stack.make_user(unique)
    reader, _ = stack.make_user(unique, name="reader")
    token = stack.login(sender, password)
    guid = stack.draft(token, to=[reader], subject="once", body="only once")

    first = stack.send(token, guid, notificationFormats=["Text"])
    again = stack.send(token, guid, notificationFormats=["Html"], sendEmailNotification=False)

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert first.json()["notificationBodyHtml"] is None
    assert len(_outbox(stack, guid)) == 1
    with stack.database.read_session() as session:
        sender_id = session.scalars(select(User.id).where(User.email == sender)).one()
        usage = session.scalars(select(DailyUsage).where(DailyUsage.user_id == sender_id)).one()
        assert usage.messages_sent == 1
        jobs = session.scalars(select(SendJob).where(SendJob.message_guid == guid)).all()
        assert len(jobs) == 2 and all(j.http_status == 200 for j in jobs)


def test_notification_formats_and_no_email_notification(stack: Stack, unique: str) -> None:
    sender, password = stack.make_user(unique)
    reader, _ = stack.make_user(unique, name="reader")
    token = stack.login(sender, password)
    guid = stack.draft(token, to=[reader], subject="s", body="b")

    response = stack.send(token, guid, notificationFormats=["html"], sendEmailNotification=False)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["notificationBodyText"] is None
    assert body["notificationBodyHtml"].lstrip().startswith("<!DOCTYPE html>")
    assert body["notificationSent"] is False
    assert _outbox(stack, guid) == []


def test_new_recipient_is_invited_as_pending_user(stack: Stack, unique: str) -> None:
    sender, password = stack.make_user(unique)
    newcomer = f"new-{unique}@example.org"
    token = stack.login(sender, password)
    guid = stack.draft(token, to=[newcomer], subject="welcome", body="b")

    response = stack.send(token, guid, inviteNewUsers=True, craCode="cra-code-123")

    assert response.status_code == 200, response.text
    with stack.database.read_session() as session:
        user = session.scalars(select(User).where(User.email == newcomer)).one()
        assert user.state is UserState.PENDING and user.password_hash is None
        invitation = session.scalars(select(Invitation).where(Invitation.user_id == user.id)).one()
        assert len(invitation.token_hash) == 64
        assert invitation.cra_code_hash is not None
        assert invitation.cra_code_hash.startswith("$argon2")
        assert "cra-code-123" not in invitation.cra_code_hash
    kinds = sorted(row.kind.value for row, _ in _outbox(stack, guid))
    assert kinds == ["invitation", "notification"]
    invitation_email = next(c for r, c in _outbox(stack, guid) if r.kind is EmailKind.INVITATION)
    assert "https://securesend.test/register?token=" in invitation_email["text"]


def test_bad_session_is_answered_by_the_shim_and_nothing_is_queued(
    stack: Stack, unique: str
) -> None:
    sender, password = stack.make_user(unique)
    token = stack.login(sender, password)
    guid = stack.draft(token, to=["x@example.com"], subject="s", body="b")

    for headers in ({}, {"x-sm-session-token": "not-a-token"}, {"authorization": "Bearer nope"}):
        with stack.client() as client:
            response = client.put(f"/api/v1/messages/{guid}/send", json={}, headers=headers)
        assert response.status_code == 401
        assert response.json()["responseStatus"]["errorCode"] == "811"
        assert (
            response.json()["responseStatus"]["message"] == "The user session is no longer valid."
        )

    with stack.client() as client:
        client.post("/api/v1/logout", headers={"x-sm-session-token": token})
    assert stack.send(token, guid).status_code == 401
    with stack.database.read_session() as session:
        count = session.scalar(select(func.count()).where(SendJob.message_guid == guid))
        assert count == 0


def test_another_users_message_is_not_found(stack: Stack, unique: str) -> None:
    owner, owner_pw = stack.make_user(unique)
    other, other_pw = stack.make_user(unique, name="other")
    guid = stack.draft(stack.login(owner, owner_pw), to=[other], subject="s", body="b")

    response = stack.send(stack.login(other, other_pw), guid)
    missing = stack.send(stack.login(other, other_pw), "0" * 32)

    for r in (response, missing):
        assert r.status_code == 404
        assert r.json()["responseStatus"] == {
            "errorCode": "929",
            "message": "Message not found",
            "errors": [],
            "meta": {},
        }


def test_recalled_message_answers_915(stack: Stack, unique: str) -> None:
    sender, password = stack.make_user(unique)
    token = stack.login(sender, password)
    guid = stack.draft(token, to=["someone@example.com"], subject="s", body="b")
    with stack.database.write_session() as session:
        message = session.scalars(select(Message).where(Message.guid == guid)).one()
        message.status = MessageStatus.RECALLED

    response = stack.send(token, guid)

    assert response.status_code == 403
    assert response.json()["responseStatus"]["errorCode"] == "915"
    assert response.json()["responseStatus"]["message"] == "The message has been recalled."


def test_the_api_subscribes_once_per_waiting_send(postgres_stack: Stack, unique: str) -> None:
    """Only the API's own listener subscribes to a job's result channel. Celery's result
    consumer would also subscribe for every task the API publishes and never read what
    arrives (celery/celery#6963): unread results piling up on the API's connections."""
    stack = postgres_stack
    sender, password = stack.make_user(unique)
    reader, _ = stack.make_user(unique, name="reader")
    token = stack.login(sender, password)
    guids = [stack.draft(token, to=[reader], subject=f"s{i}", body="b") for i in range(10)]
    server = redis.Redis.from_url(stack.config.redis_url)

    def subscribe_calls() -> int:
        stats = server.info("commandstats").get("cmdstat_subscribe", {})
        return int(stats.get("calls", 0))

    before = subscribe_calls()
    for guid in guids:
        assert stack.send(token, guid).status_code == 200
    assert subscribe_calls() - before == len(guids)


def test_redis_keeps_a_send_result_for_an_hour(
    postgres_stack: Stack, unique: str, wait_until: Any
) -> None:
    """The answer lives on in the job row; Redis keeps the result (the rendered
    notification) only for `result.get()` by direct enqueuers (RESULT_TTL_SECONDS)."""
    stack = postgres_stack
    sender, password = stack.make_user(unique)
    reader, _ = stack.make_user(unique, name="reader")
    token = stack.login(sender, password)
    guid = stack.draft(token, to=[reader], subject="ttl", body="b")
    with stack.client() as client:
        accepted = client.put(
            f"/api/v1/messages/{guid}/send",
            json={},
            headers={"x-sm-session-token": token, "prefer": "respond-async"},
        )
    assert accepted.status_code == 202
    key = "celery-task-meta-" + accepted.json()["jobId"]
    server = redis.Redis.from_url(stack.config.redis_url)
    assert wait_until(lambda: server.exists(key))
    assert 3500 < server.ttl(key) <= 3600

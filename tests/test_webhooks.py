"""Webhooks (SPEC 8): a sender group's endpoints hear of its sends and of what became of
each email, signed per Standard Webhooks and verified here as a receiver would, with the
`standardwebhooks` library; delivered at least once through the outbox, retried on the
schedule (shortened by the test stacks' WEBHOOK_RETRY_SCHEDULE), an endpoint that
answers 410 disabled. On both stacks, through the live workers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from tests.factories import World
from tests.support import Stack, run_cli
from tests.webhook_receiver import Receiver, running_receiver
from worker.domain import clock, suppressions, webhooks
from worker.domain.delivery import RetryPolicy
from worker.models import Channel, EmailStatus, Message, OutboxEmail, WebhookEndpoint
from worker.settings import Settings
from worker.webhook_transport import HttpPoster


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


def _types(received: list[Any]) -> list[str]:
    return sorted(r.event["type"] for r in received)


def _endpoint(stack: Stack, group: str) -> WebhookEndpoint:
    with stack.database.read_session() as session:
        (endpoint,) = webhooks.list_endpoints(session, group=group)
        found = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.uid == endpoint.uid))
        return found.one()


def test_a_send_tells_the_endpoint_once_each_signed_and_without_content(
    stack: Stack, unique: str, receiver: Receiver
) -> None:
    world = World(stack, unique).setup()
    path = f"/hooks/{unique}"
    secret = world.hook(receiver.url(path))
    reader = world.user("reader")
    guid = world.draft(to=[reader], subject=f"SUBJECT-{unique}", body=f"BODY-{unique}")
    assert world.send(guid).status_code == 200

    received = receiver.wait_for(path, 2)
    assert _types(received) == ["email.sent", "message.sent"]
    ids = [r.headers["webhook-id"] for r in received]
    assert len(set(ids)) == 2 and all(i.startswith("msg_") for i in ids)
    events = {r.event["type"]: r.verified(secret) for r in received}
    sent = events["message.sent"]["data"]
    assert sent["messageGuid"] == guid and sent["recipients"] == 1
    assert sent["emailsQueued"] == 1 and sent["emailsSuppressed"] == 0
    email = events["email.sent"]["data"]
    assert (email["messageGuid"], email["email"], email["kind"]) == (guid, reader, "notification")
    assert email["status"] == "sent" and email["emailMessageId"].startswith("<")
    for r in received:
        assert (
            f"SUBJECT-{unique}" not in r.body.decode() and f"BODY-{unique}" not in r.body.decode()
        )
        assert world.token not in r.body.decode()
    # Delivered once each, not again: the rows say sent after their first attempt.
    assert world.settled_webhooks() == [
        ("message.sent", EmailStatus.SENT, 1),
        ("email.sent", EmailStatus.SENT, 1),
    ]
    assert len(receiver.at(path)) == 2
    # The endpoint's secret is sealed in the database, never in plain text.
    with stack.database.read_session() as session:
        stored = session.execute(select(WebhookEndpoint.sealed_secret)).scalars().all()
    assert all(secret not in value for value in stored)


def test_an_endpoint_answering_500_three_times_gets_the_event_on_the_fourth_attempt(
    stack: Stack, unique: str, receiver: Receiver
) -> None:
    world = World(stack, unique).setup()
    path = f"/flaky/{unique}"
    receiver.script[path] = [500, 500, (503, {"Retry-After": "1"})]
    secret = world.hook(receiver.url(path), events=["message.sent"])
    guid = world.sent_message([world.user("reader")])

    received = receiver.wait_for(path, 4)
    assert len(received) == 4
    assert len({r.headers["webhook-id"] for r in received}) == 1  # one event, four attempts
    assert received[-1].verified(secret)["data"]["messageGuid"] == guid
    assert world.settled_webhooks() == [("message.sent", EmailStatus.SENT, 4)]


def test_an_endpoint_answering_410_is_disabled_and_hears_nothing_more(
    stack: Stack, unique: str, receiver: Receiver, wait_until: Any
) -> None:
    world = World(stack, unique).setup()
    path = f"/gone/{unique}"
    receiver.script[path] = [410]
    world.hook(receiver.url(path), events=["message.sent"])
    world.sent_message([world.user("reader")])

    assert len(receiver.wait_for(path, 1)) == 1
    assert wait_until(lambda: _endpoint(stack, world.group).disabled_at is not None)
    assert _endpoint(stack, world.group).disabled_reason == "410 Gone"
    assert world.settled_webhooks() == [("message.sent", EmailStatus.FAILED, 1)]
    world.sent_message([world.user("other")])
    assert len(world.webhook_rows()) == 1  # no event queued for a disabled endpoint
    # An operator adds it again: it hears of the next send.
    world.hook(receiver.url(path), events=["message.sent"])
    world.sent_message([world.user("third")])
    assert len(receiver.wait_for(path, 2)) == 2


def test_a_group_without_endpoints_queues_no_event(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    guid = world.sent_message([world.user("reader")])
    with stack.database.read_session() as session:
        rows = session.execute(
            select(OutboxEmail.channel, OutboxEmail.webhook_group_id)
            .join(Message, Message.id == OutboxEmail.message_id)
            .where(Message.guid == guid)
        ).all()
    assert [tuple(row) for row in rows] == [(Channel.EMAIL, None)]


def test_suppressed_and_recalled_are_told(stack: Stack, unique: str, receiver: Receiver) -> None:
    world = World(stack, unique).setup()
    world.apply_group(recall=True)
    path = f"/all/{unique}"
    secret = world.hook(receiver.url(path), events=["email.suppressed", "message.recalled"])
    blocked = world.user("blocked")
    with stack.database.write_session() as session:
        suppressions.suppress(session, blocked, source="manual", reason="asked", now=clock.now())
    guid = world.sent_message([blocked])

    suppressed = receiver.wait_for(path, 1)[0].verified(secret)
    assert suppressed["type"] == "email.suppressed"
    assert suppressed["data"]["email"] == blocked
    assert suppressed["data"]["reason"] == "suppressed (manual): asked"
    answer = httpx.post(
        stack.url(f"/api/v1/messages/{guid}/recall"),
        json={},
        headers={"x-sm-session-token": world.token},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    recalled = receiver.wait_for(path, 2)[1].verified(secret)
    assert recalled["type"] == "message.recalled" and recalled["data"]["messageGuid"] == guid


def test_a_rotated_secret_signs_with_both_and_replay_sends_the_same_id(
    stack: Stack, unique: str, receiver: Receiver
) -> None:
    world = World(stack, unique).setup()
    path = f"/rotate/{unique}"
    old = world.hook(receiver.url(path), events=["message.sent"])
    new = world.hook(receiver.url(path), events=["message.sent"], secret=webhooks.new_secret())
    world.sent_message([world.user("reader")])
    (first,) = receiver.wait_for(path, 1)
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    assert first.verified(old) == first.verified(new)

    replayed = run_cli("webhooks", "replay", first.headers["webhook-id"], env=stack.env)
    assert replayed.returncode == 0, replayed.stderr
    assert "queued 1 deliveries again" in replayed.stdout
    again = receiver.wait_for(path, 2)
    assert len(again) == 2 and again[1].headers["webhook-id"] == first.headers["webhook-id"]
    assert again[1].verified(new) == first.verified(new)


def test_the_cli_adds_lists_and_removes_and_refuses_a_private_address(
    stack: Stack, unique: str
) -> None:
    world = World(stack, unique).setup()
    strict = {k: v for k, v in stack.env.items() if k != "WEBHOOK_ALLOW_PRIVATE_NETWORKS"}
    url = f"http://127.0.0.1:9/{unique}?token=not-in-logs"
    refused = run_cli("webhooks", "add", "--group", world.group, "--url", url, env=strict)
    assert refused.returncode == 2 and "private or loopback" in refused.stderr
    added = run_cli("webhooks", "add", "--group", world.group, "--url", url, env=stack.env)
    assert added.returncode == 0, added.stderr
    uid = added.stdout.split()[0]
    secret = added.stdout.split("secret (shown once): ")[1].strip()
    webhooks.check_secret(secret)
    listed = json.loads(run_cli("webhooks", "list", "--group", world.group, env=stack.env).stdout)
    assert [(e["id"], e["url"], len(e["events"])) for e in listed] == [(uid, url, 7)]
    assert secret not in json.dumps(listed)
    removed = run_cli("webhooks", "remove", uid, env=stack.env)
    assert removed.returncode == 0 and removed.stdout.strip() == f"removed {uid}"
    assert (
        json.loads(run_cli("webhooks", "list", "--group", world.group, env=stack.env).stdout) == []
    )


def test_the_transport_refuses_private_addresses_unless_allowed(receiver: Receiver) -> None:
    strict = HttpPoster(Settings(webhook_allow_private_networks=False))
    allowed = HttpPoster(Settings(webhook_allow_private_networks=True))
    try:
        with pytest.raises(webhooks.WebhookRefused, match="private or loopback"):
            strict.post(receiver.url("/strict"), headers={}, body=b"{}")
        for host in ("localhost", "[::1]", "10.0.0.1", "169.254.169.254"):
            with pytest.raises((webhooks.WebhookRefused, webhooks.WebhookUnreachable)):
                strict.post(f"http://{host}:9/x", headers={}, body=b"{}")
        assert allowed.post(receiver.url("/allowed"), headers={}, body=b"{}").status == 200
        receiver.script["/redirect"] = [(302, {"Location": receiver.url("/allowed")})]
        assert allowed.post(receiver.url("/redirect"), headers={}, body=b"{}").status == 302
        assert len(receiver.at("/allowed")) == 1  # the redirect was not followed
    finally:
        strict.close()
        allowed.close()


def test_an_endpoint_failing_for_five_days_is_disabled(
    stack: Stack, unique: str, receiver: Receiver, wait_until: Any
) -> None:
    """WEBHOOK_DISABLE_AFTER_DAYS as shipped (5): the endpoint's failures began six days
    ago (set in its row), and the next failure disables it."""
    world = World(stack, unique).setup()
    path = f"/failing/{unique}"
    receiver.script[path] = [500]
    world.hook(receiver.url(path), events=["message.sent"])
    with stack.database.write_session() as session:
        session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.url == receiver.url(path))
            .values(failing_since=clock.now() - timedelta(days=6))
        )
    world.sent_message([world.user("reader")])

    assert wait_until(lambda: _endpoint(stack, world.group).disabled_at is not None)
    assert str(_endpoint(stack, world.group).disabled_reason).startswith("failing since ")
    assert world.settled_webhooks() == [("message.sent", EmailStatus.FAILED, 1)]
    assert len(receiver.at(path)) == 1


def test_a_fixture_with_a_bad_secret_is_refused_without_echoing_it(
    stack: Stack, unique: str, tmp_path: Path
) -> None:
    leaked = f"whsec_short{unique}"
    fixture = tmp_path / "hooks.json"
    hook = {"url": "https://hooks.example.org/x", "events": ["email.sent"], "secret": leaked}
    fixture.write_text(json.dumps({"groups": [{"name": f"g-{unique}", "webhooks": [hook]}]}))
    loaded = run_cli("load", str(fixture), env=stack.env)
    assert loaded.returncode == 2
    assert "webhooks.0.secret" in loaded.stderr and leaked not in loaded.stderr + loaded.stdout
    hook["events"] = ["email.opened"]
    hook["secret"] = webhooks.new_secret()
    fixture.write_text(json.dumps({"groups": [{"name": f"g-{unique}", "webhooks": [hook]}]}))
    loaded = run_cli("load", str(fixture), env=stack.env)
    assert loaded.returncode == 2 and "unknown webhook events ['email.opened']" in loaded.stderr


def test_the_schedule_and_what_a_reply_means() -> None:
    policy = RetryPolicy.for_webhooks(Settings())
    assert policy.schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert policy.max_attempts == 8  # the first attempt, then one after each wait
    assert [policy.delay(n) for n in (1, 2, 7)] == [5, 300, 36000]
    assert webhooks.judge(webhooks.WebhookReply(204)).outcome == "sent"
    assert webhooks.judge(webhooks.WebhookReply(410)).outcome == "disable"
    for status in (301, 400, 404, 429, 500, 503):
        assert webhooks.judge(webhooks.WebhookReply(status, 7.0)) == webhooks.Verdict(
            "retry", webhooks.judge(webhooks.WebhookReply(status)).reason, 7.0
        )
    with pytest.raises(ValueError, match="WEBHOOK_RETRY_SCHEDULE") as refused:
        Settings(webhook_retry_schedule="5,soon", secret_key="Sentinel-key-in-settings")
    assert "Sentinel-key-in-settings" not in str(refused.value)  # no setting's value echoed

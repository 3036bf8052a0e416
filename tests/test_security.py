"""Safe to expose: limits, sessions, authorisation on every operation, and no secret in
plain text anywhere we keep or show data."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import redis
from sqlalchemy import func, inspect, select, text, update

from tests.factories import World
from tests.smtp_sink import SmtpSink
from tests.support import REDIS_TEST_URL, Stack, assert_error
from tests.webhook_receiver import Receiver, running_receiver
from worker.domain import clock
from worker.domain.attachments import CHUNK_BYTES
from worker.models import User, UserSession

SECRETS = {
    "fyeo": "Sentinel-FYEO-pw-3141",
    "cra": "Sentinel-CRA-2718",
}


def test_request_body_cap_is_413(sqlite_stack: Stack, unique: str) -> None:
    world = World(sqlite_stack, unique).setup()
    guid = world.draft(to=[world.user("r")])
    big = b'{"body": "' + b"x" * (3 * 1024 * 1024) + b'"}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    with sqlite_stack.client() as client:
        headers = {"x-sm-session-token": world.token, "content-type": "application/json"}
        declared = client.put(f"/api/v1/messages/{guid}/save", content=big, headers=headers)
        streamed = client.put(f"/api/v1/messages/{guid}/save", content=chunks(), headers=headers)
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["responseStatus"]["errorCode"] == "RequestEntityTooLarge"


def test_draft_limits_are_validation_errors(sqlite_stack: Stack, unique: str) -> None:
    world = World(sqlite_stack, unique).setup()
    guid = world.draft(to=[world.user("r")])
    cases = {
        "To": {"to": [f"a{i}@example.com" for i in range(501)]},
        "Subject": {"subject": "s" * 1001},
        "Body": {"body": "b" * 1_000_001},
        "Bcc": {"bcc": ["x" * 321]},
    }
    with sqlite_stack.client() as client:
        for field, body in cases.items():
            response = client.put(
                f"/api/v1/messages/{guid}/save",
                json=body,
                headers={"x-sm-session-token": world.token},
            )
            assert response.status_code == 400, field
            assert response.json()["responseStatus"]["errors"][0]["fieldName"].startswith(field)


def test_sessions_expire_after_the_idle_time(sqlite_stack: Stack, unique: str) -> None:
    world = World(sqlite_stack, unique).setup()
    with sqlite_stack.client() as client:
        assert (
            client.get(
                "/api/v1/user/quotas", headers={"x-sm-session-token": world.token}
            ).status_code
            == 200
        )
    with sqlite_stack.database.write_session() as session:
        session.execute(
            update(UserSession)
            .where(UserSession.ended_at.is_(None))
            .values(last_seen_at=clock.now() - timedelta(minutes=61))
        )
    with sqlite_stack.client() as client:
        expired = client.get("/api/v1/user/quotas", headers={"x-sm-session-token": world.token})
    assert_error(expired, 401, "811", "The user session is no longer valid.")


def _set_last_seen(stack: Stack, sender: str, when: datetime) -> None:
    user_id = select(User.id).where(User.email == sender).scalar_subquery()
    with stack.database.write_session() as session:
        session.execute(
            update(UserSession).where(UserSession.user_id == user_id).values(last_seen_at=when)
        )


def _last_seen(stack: Stack, sender: str) -> datetime | None:
    with stack.database.read_session() as session:
        return session.scalar(
            select(func.max(UserSession.last_seen_at))
            .join(User, User.id == UserSession.user_id)
            .where(User.email == sender)
        )


def test_reads_and_failed_requests_keep_a_session_alive(stack: Stack, unique: str) -> None:
    """Rule 1 runs in the operation's transaction (read-only for reads); the idle timer is
    refreshed in a write of its own, which a failing operation does not roll back."""
    world = World(stack, unique).setup()
    headers = {"x-sm-session-token": world.token}
    just_now = clock.now() - timedelta(minutes=1)
    with stack.client() as client:
        _set_last_seen(stack, world.sender, clock.now() - timedelta(minutes=59))
        assert client.get("/api/v1/messages/inbox", headers=headers).status_code == 200
        last_seen = _last_seen(stack, world.sender)
        assert last_seen is not None and last_seen > just_now

        _set_last_seen(stack, world.sender, clock.now() - timedelta(minutes=59))
        missing = client.put(f"/api/v1/messages/{'0' * 32}/save", json={}, headers=headers)
        assert missing.status_code == 404
        last_seen = _last_seen(stack, world.sender)
        assert last_seen is not None and last_seen > just_now


def test_a_bad_session_answers_811_before_anything_in_the_request(stack: Stack) -> None:
    with stack.client() as client:
        answer = client.get(
            f"/api/v1/messages/{'0' * 32}",
            headers={"x-sm-session-token": "not-a-session", "x-sm-password": "not base64!"},
        )
    assert_error(answer, 401, "811", "The user session is no longer valid.")


def test_other_users_messages_and_jobs_answer_404_on_every_operation(
    stack: Stack, unique: str
) -> None:
    owner = World(stack, unique).setup()
    reader = owner.user("reader")
    sent = owner.sent_message([reader])
    draft = owner.draft(to=[reader])
    with stack.client() as client:
        job = client.put(
            f"/api/v1/messages/{draft}/send",
            json={},
            headers={"x-sm-session-token": owner.token, "prefer": "respond-async"},
        ).json()["jobId"]
    stranger_email, stranger_pw = stack.make_user(unique, name="stranger")
    stranger = {"x-sm-session-token": stack.login(stranger_email, stranger_pw)}
    with stack.client() as client:
        attempts = [
            client.get(f"/api/v1/messages/{sent}", headers=stranger),
            client.get(f"/api/v1/messages/{draft}", headers=stranger),
            client.put(
                f"/api/v1/messages/{draft}/save", json={"subject": "mine"}, headers=stranger
            ),
            client.put(f"/api/v1/messages/{draft}/send", json={}, headers=stranger),
            client.post(f"/api/v1/messages/{sent}/recall", json={}, headers=stranger),
            client.get(f"/api/v1/jobs/{job}", headers=stranger),
        ]
        inbox = client.get("/api/v1/messages/inbox", headers=stranger).json()
    for response in attempts:
        assert response.status_code == 404, response.request.url
    assert inbox["results"] == [] and inbox["totalItems"] == 0
    with stack.client() as client:  # nothing of the owner's changed
        mine = client.get(
            f"/api/v1/messages/{draft}", headers={"x-sm-session-token": owner.token}
        ).json()
    assert mine["subject"] != "mine"


def _database_text(stack: Stack) -> str:
    parts: list[str] = []
    with stack.database.engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                parts.append(" ".join(str(v) for v in row))
    return "\n".join(parts)


def _redis_text(url: str) -> str:
    client = redis.Redis.from_url(url)
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            parts.append(repr(client.get(key)))
        elif kind == b"list":
            parts.extend(repr(v) for v in client.lrange(key, 0, -1))
        elif kind == b"hash":
            parts.extend(repr(v) for v in client.hgetall(key).values())
        elif kind == b"zset":
            parts.extend(repr(v) for v in client.zrange(key, 0, -1))
        parts.append(repr(key))
    return "\n".join(parts)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


def test_secrets_never_appear_in_plain_text(
    postgres_stack: Stack, smtp_sink: SmtpSink, unique: str, receiver: Receiver
) -> None:
    world = World(postgres_stack, unique, features={"cra": True}).setup()
    invitee = f"invitee-{unique}@example.org"
    subject, body = f"SUBJECT-{unique}", f"BODY-{unique}"
    guid = world.draft(
        to=[world.user("r")],
        cc=[invitee],
        subject=subject,
        body=body,
        messageOptions={"fyeoType": "UniquePassword"},
    )
    # Every event, to an endpoint whose bodies must hold none of it either.
    hook_path = f"/audit/{unique}"
    hook_secret = world.hook(receiver.url(hook_path))
    # A file whose every byte is a marker, in chunks through the API like any client's.
    marker = f"FILE-BYTES-{unique}-"
    file_bytes = (marker * (CHUNK_BYTES // len(marker) + 2)).encode()
    (placeholder,) = world.files().placeholders(guid, {"plans.txt": len(file_bytes)})
    world.files().upload_all(placeholder, file_bytes)
    with postgres_stack.client() as client:
        held = client.put(  # one job waits in Redis: the payload must be sealed there too
            f"/api/v1/messages/{world.draft(to=[world.user('q')])}/send",
            json={"password": SECRETS["fyeo"], "craCode": SECRETS["cra"]},
            headers={"x-sm-session-token": world.token, "prefer": "respond-async"},
        )
    response = world.send(
        guid, password=SECRETS["fyeo"], craCode=SECRETS["cra"], inviteNewUsers=True
    )
    assert held.status_code == 202 and response.status_code == 200, response.text
    [invitation] = [
        r for r in smtp_sink.wait_for(invitee, count=2) if "register?token=" in r.raw.decode()
    ]
    plain = invitation.message.get_body(preferencelist=("plain",))
    assert plain is not None
    token_match = re.search(r"register\?token=([A-Za-z0-9_\-%]+)", plain.get_content())
    assert token_match is not None
    secrets = {
        **SECRETS,
        "session": world.token,
        "invitation": token_match.group(1),
        "account": world.password,
        "file": marker,
        "webhook": hook_secret,
    }
    # message.sent twice (the held job runs too), email.sent for each email, at least.
    events = receiver.wait_for(hook_path, 4)
    assert {e.verified(hook_secret)["type"] for e in events} >= {"message.sent", "email.sent"}
    time.sleep(1)  # let the logs flush
    deliveries = postgres_stack.deliveries(world.token, guid)
    assert deliveries.status_code == 200 and invitee in deliveries.text, deliveries.text

    places = {
        "database": _database_text(postgres_stack),
        "redis": _redis_text(REDIS_TEST_URL),
        "api log": postgres_stack.log("api"),
        "worker log": postgres_stack.log("worker"),
        "response": response.text,
        "deliveries answer": deliveries.text,
        "webhook bodies": "\n".join(e.body.decode() for e in receiver.at(hook_path)),
    }
    for place, content in places.items():
        assert content, place
        for name, secret in secrets.items():
            assert secret not in content, f"the {name} secret is in the {place}"
    # Not secrets (the message is stored to be read), but never told or logged.
    assert subject in places["database"] and body in places["database"]
    for place in ("api log", "worker log", "deliveries answer", "webhook bodies"):
        for name, content in (("subject", subject), ("body", body)):
            assert content not in places[place], f"the {name} is in the {place}"
    assert "$argon2" in places["database"]  # what is stored instead
    assert "plans.txt" in places["database"]  # the file is there, sealed

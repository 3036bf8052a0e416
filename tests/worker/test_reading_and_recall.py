"""GetMessage for recipients (FYEO), RecallMessage, GetInbox (SPEC 4)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update

from tests.factories import World
from tests.support import Stack, assert_error
from worker.models import Message


def _get(stack: Stack, token: str, guid: str, **headers: str) -> httpx.Response:
    with stack.client() as client:
        return client.get(
            f"/api/v1/messages/{guid}", headers={"x-sm-session-token": token, **headers}
        )


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _reader(world: World) -> tuple[str, str, str]:
    email, password = world.stack.make_user(world.tag, name="reader", group=world.group)
    return email, password, world.stack.login(email, password)


def test_recipient_reads_a_sent_message_without_other_bcc(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader, _, token = _reader(world)
    hidden = world.user("hidden")
    guid = world.draft(to=[reader], bcc=[hidden], subject="hello", body="the body")

    assert_error(_get(stack, token, guid), 404, "929", "Message not found")  # still a draft
    assert world.send(guid).status_code == 200
    response = _get(stack, token, guid)

    assert response.status_code == 200
    message = response.json()
    assert message["status"] == "Sent" and message["body"] == "the body"
    assert [p["email"] for p in message["to"]] == [reader]
    assert message["to"][0]["guid"] and message["bcc"] == []
    assert message["sender"]["email"] == world.sender
    assert _get(stack, world.token, guid).json()["bcc"][0]["email"] == hidden  # the sender sees it


def test_a_stranger_gets_929(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    guid = world.sent_message([world.user("r")])
    stranger, pw = stack.make_user(unique, name="stranger")
    assert_error(_get(stack, stack.login(stranger, pw), guid), 404, "929", "Message not found")


def test_fyeo_account_password_needs_the_readers_own_password(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader, reader_pw, token = _reader(world)
    guid = world.draft(to=[reader], messageOptions={"fyeoType": "AccountPassword"}, body="eyes")
    assert world.send(guid, password=world.password).status_code == 200

    assert_error(_get(stack, token, guid), 403, "51", "You must pass FYEO message password.")
    wrong = _get(stack, token, guid, **{"x-sm-password": _b64(world.password)})
    assert_error(wrong, 403, "38", "Incorrect For Your Eyes Only password.")
    garbage = _get(stack, token, guid, **{"x-sm-password": "%%%"})
    assert_error(garbage, 403, "38", "Incorrect For Your Eyes Only password.")
    right = _get(stack, token, guid, **{"x-sm-password": _b64(reader_pw)})
    assert right.status_code == 200 and right.json()["body"] == "eyes"
    with stack.client() as client:  # without the body, no password is needed
        summary = client.get(
            f"/api/v1/messages/{guid}?retrieveBody=false", headers={"x-sm-session-token": token}
        )
    assert summary.status_code == 200 and summary.json()["body"] is None


def test_fyeo_unique_password(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader, reader_pw, token = _reader(world)
    guid = world.draft(to=[reader], messageOptions={"fyeoType": "UniquePassword"}, body="eyes")
    assert world.send(guid, password="message password").status_code == 200

    wrong = _get(stack, token, guid, **{"x-sm-password": _b64(reader_pw)})
    assert_error(wrong, 403, "38", "Incorrect For Your Eyes Only password.")
    right = _get(stack, token, guid, **{"x-sm-password": _b64("message password")})
    assert right.status_code == 200 and right.json()["body"] == "eyes"


def test_expired_message_answers_76_to_its_recipient(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader, _, token = _reader(world)
    expiry = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    guid = world.draft(to=[reader], expiryDate=expiry)
    assert world.send(guid).status_code == 200
    assert _get(stack, token, guid).status_code == 200
    with stack.database.write_session() as session:
        session.execute(
            update(Message)
            .where(Message.guid == guid)
            .values(expiry_date=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert_error(_get(stack, token, guid), 403, "76", "Message Expiry is invalid.")


def _recall(stack: Stack, token: str, guid: str, reason: str = "oops") -> httpx.Response:
    with stack.client() as client:
        return client.post(
            f"/api/v1/messages/{guid}/recall",
            json={"recallReason": reason},
            headers={"x-sm-session-token": token},
        )


def test_recall_hides_the_message_and_blocks_replies(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader, reader_pw, token = _reader(world)
    guid = world.sent_message([reader])
    reader_world = world.as_user(reader, reader_pw)
    with stack.client() as client:
        reply = client.post(
            "/api/v1/messages/",
            json={"actionCode": "Reply", "parentGuid": guid},
            headers={"x-sm-session-token": token},
        ).json()["messageGuid"]
        client.put(
            f"/api/v1/messages/{reply}/save",
            json={"to": [world.sender]},
            headers={"x-sm-session-token": token},
        )

    assert _recall(stack, world.token, guid).status_code == 200
    assert _recall(stack, world.token, guid, "again").status_code == 200  # idempotent

    assert_error(_get(stack, token, guid), 403, "915", "The message has been recalled.")
    sender_view = _get(stack, world.token, guid).json()
    assert sender_view["status"] == "Recalled" and sender_view["recallReason"] == "oops"
    assert_error(reader_world.send(reply), 403, "915", "The message has been recalled.")
    assert_error(world.send(guid), 403, "915", "The message has been recalled.")
    with stack.client() as client:
        forward = client.post(
            "/api/v1/messages/",
            json={"actionCode": "Forward", "parentGuid": guid},
            headers={"x-sm-session-token": token},
        )
    assert_error(forward, 403, "915", "The message has been recalled.")


def test_recall_errors(stack: Stack, unique: str) -> None:
    world = World(stack, unique)
    world.features["recall"] = False
    world.setup()
    draft = world.draft(to=[world.user("r")])
    stranger, pw = stack.make_user(unique, name="stranger")
    assert_error(
        _recall(stack, world.token, draft), 403, "921", "This user doesn't have access to Recall."
    )
    assert_error(_recall(stack, stack.login(stranger, pw), draft), 404, "929", "Message not found")


def test_inbox_lists_received_messages_newest_first(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader, _, token = _reader(world)
    sent = [world.sent_message([reader]) for _ in range(3)]
    recalled = world.sent_message([reader])
    assert _recall(stack, world.token, recalled).status_code == 200
    world.draft(to=[reader])  # a draft is not in anybody's inbox

    with stack.client() as client:
        page1 = client.get(
            "/api/v1/messages/inbox?pageSize=2", headers={"x-sm-session-token": token}
        ).json()
        page2 = client.get(
            "/api/v1/messages/inbox?page=2&pageSize=2", headers={"x-sm-session-token": token}
        ).json()
        too_big = client.get(
            "/api/v1/messages/inbox?pageSize=101", headers={"x-sm-session-token": token}
        )
        sender_inbox = client.get(
            "/api/v1/messages/inbox", headers={"x-sm-session-token": world.token}
        ).json()

    assert page1["totalItems"] == page2["totalItems"] == 3
    listed = [m["guid"] for m in page1["results"] + page2["results"]]
    assert listed == list(reversed(sent))
    assert all(m["body"] is None for m in page1["results"])
    assert too_big.status_code == 400
    assert sender_inbox["results"] == [] and sender_inbox["totalItems"] == 0


def test_precreate_errors(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader, reader_pw, token = _reader(world)
    stranger, stranger_pw = stack.make_user(unique, name="stranger")
    stranger_token = stack.login(stranger, stranger_pw)
    fyeo = world.draft(to=[reader], messageOptions={"fyeoType": "AccountPassword"})
    assert world.send(fyeo, password=world.password).status_code == 200

    def precreate(token_: str, **body: object) -> httpx.Response:
        with stack.client() as client:
            return client.post(
                "/api/v1/messages/", json=body, headers={"x-sm-session-token": token_}
            )

    assert_error(
        precreate(token, actionCode="Reply", parentGuid="1" * 32), 403, "929", "Message not found"
    )
    assert_error(
        precreate(stranger_token, actionCode="Reply", parentGuid=fyeo),
        403,
        "907",
        "You do not have access to this message.",
    )
    assert_error(
        precreate(token, actionCode="Reply", parentGuid=fyeo, password="wrong"),
        403,
        "38",
        "Incorrect For Your Eyes Only password.",
    )
    ok = precreate(token, actionCode="reply", parentGuid=fyeo, password=reader_pw)
    assert ok.status_code == 200
    draft = _get(stack, token, ok.json()["messageGuid"]).json()
    assert draft["parentGuid"] == fyeo and draft["action"] == "Reply"
    assert draft["subject"].startswith("RE: ")


def test_repeated_wrong_fyeo_passwords_lock_the_message_for_that_reader(
    stack: Stack, unique: str
) -> None:
    world = World(stack, unique).setup()
    reader, _, token = _reader(world)
    other, other_pw = stack.make_user(unique, name="other2", group=world.group)
    other_token = stack.login(other, other_pw)
    guid = world.draft(to=[reader, other], messageOptions={"fyeoType": "UniquePassword"})
    assert world.send(guid, password="message password").status_code == 200
    wrong = {"x-sm-password": _b64("guess")}
    right = {"x-sm-password": _b64("message password")}

    assert _get(stack, token, guid, **wrong).status_code == 403
    assert _get(stack, token, guid, **right).status_code == 200  # a success resets the count
    codes = [
        _get(stack, token, guid, **wrong).json()["responseStatus"]["errorCode"] for _ in range(5)
    ]
    locked = _get(stack, token, guid, **right)

    assert codes == ["38"] * 5
    assert_error(
        locked, 403, "39", "Too many incorrect For Your Eyes Only passwords. Try again later."
    )
    assert _get(stack, other_token, guid, **right).status_code == 200  # only that reader

"""SPEC 3.1 rules 5-22 through HTTP: each rule's status, code and exact message, the
recipients it names, and which rule answers when two fail at once. (The same rules on a
session, in-process, without HTTP or a worker: `test_send_rules_in_process.py`.)"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.factories import World
from tests.support import Stack, assert_error, named_recipients
from worker.models import DailyUsage, Message, MessageStatus, User


@pytest.fixture
def world(stack: Stack, unique: str) -> World:
    return World(stack, unique)


def _set_parent(stack: Stack, guid: str, **values: Any) -> None:
    with stack.database.write_session() as session:
        session.execute(update(Message).where(Message.guid == guid).values(**values))


def _reply_draft(world: World, action: str, **parent_options: Any) -> tuple[World, str, str]:
    """A message from the sender to a reader, and the reader's draft answering it."""
    world.setup()
    reader_email, reader_pw = world.stack.make_user(world.tag, name="reader", group=world.group)
    parent = world.sent_message([reader_email])
    reader = world.as_user(reader_email, reader_pw)
    with world.stack.client() as client:
        created = client.post(
            "/api/v1/messages/",
            json={"actionCode": action, "parentGuid": parent},
            headers={"x-sm-session-token": reader.token},
        )
    assert created.status_code == 200, created.text
    draft = created.json()["messageGuid"]
    return reader, parent, draft


# --- rules 5-7 ------------------------------------------------------------------------------


def test_rule_5_forward_not_allowed_909(world: World) -> None:
    reader, parent, draft = _reply_draft(world, "Forward")
    other = world.user("other")
    world.stack.draft  # noqa: B018 - drafts are saved through the reader below
    with world.stack.client() as client:
        client.put(
            f"/api/v1/messages/{draft}/save",
            json={"to": [other]},
            headers={"x-sm-session-token": reader.token},
        )
    _set_parent(world.stack, parent, allow_forward=False)  # changed after the draft was made
    assert_error(reader.send(draft), 403, "909", "You cannot forward to this message.")


def test_rule_6_reply_not_allowed_908(world: World) -> None:
    reader, parent, draft = _reply_draft(world, "Reply")
    with world.stack.client() as client:
        client.put(
            f"/api/v1/messages/{draft}/save",
            json={"to": [world.sender]},
            headers={"x-sm-session-token": reader.token},
        )
    _set_parent(world.stack, parent, allow_reply=False)
    assert_error(reader.send(draft), 403, "908", "You cannot reply to this message.")


@pytest.mark.parametrize("action", ["ReplyAll", "Reply"])
def test_rule_7_reply_all_not_allowed_77(world: World, action: str) -> None:
    reader, parent, draft = _reply_draft(world, action)
    bystander = world.user("bystander")
    to = [world.sender, bystander] if action == "Reply" else [world.sender]
    with world.stack.client() as client:
        saved = client.put(
            f"/api/v1/messages/{draft}/save",
            json={"to": to},
            headers={"x-sm-session-token": reader.token},
        )
    assert saved.status_code == 200
    _set_parent(world.stack, parent, allow_reply_all=False)
    assert_error(reader.send(draft), 403, "77", "You cannot reply to this message.")


def test_rule_7_a_reply_to_the_parents_sender_only_is_allowed(world: World) -> None:
    reader, parent, draft = _reply_draft(world, "Reply")
    _set_parent(world.stack, parent, allow_reply_all=False)
    with world.stack.client() as client:
        client.put(
            f"/api/v1/messages/{draft}/save",
            json={"to": [world.sender.upper()]},
            headers={"x-sm-session-token": reader.token},
        )
    assert reader.send(draft).status_code == 200


@pytest.mark.parametrize(
    ("action", "option", "code"),
    [
        ("Forward", "allow_forward", "909"),
        ("Reply", "allow_reply", "908"),
        ("ReplyAll", "allow_reply_all", "77"),
    ],
)
def test_rules_5_to_7_at_precreate(world: World, action: str, option: str, code: str) -> None:
    world.setup()
    reader_email, reader_pw = world.stack.make_user(world.tag, name="reader", group=world.group)
    parent = world.sent_message([reader_email])
    _set_parent(world.stack, parent, **{option: False})
    reader = world.as_user(reader_email, reader_pw)
    with world.stack.client() as client:
        response = client.post(
            "/api/v1/messages/",
            json={"actionCode": action, "parentGuid": parent},
            headers={"x-sm-session-token": reader.token},
        )
    assert response.status_code == 403
    assert response.json()["responseStatus"]["errorCode"] == code


# --- rules 8-13 -----------------------------------------------------------------------------

FEATURE_CASES = [
    ("fyeo", {"fyeoType": "AccountPassword"}, "922", "This user doesn't have access to FYEO."),
    (
        "confidential",
        {"confidential": True},
        "930",
        "This user doesn't have access to Confidential.",
    ),
]


@pytest.mark.parametrize(("feature", "options", "code", "message"), FEATURE_CASES)
def test_rules_8_9_group_features(
    world: World, feature: str, options: dict[str, Any], code: str, message: str
) -> None:
    world.setup()
    guid = world.draft(to=[world.user("r")], messageOptions=options)
    world.apply_group(**{feature: False})  # the package changed after the draft was saved
    assert_error(world.send(guid, password=world.password), 403, code, message)


@pytest.mark.parametrize(("feature", "options", "code", "message"), FEATURE_CASES)
def test_rules_8_9_at_save(
    world: World, feature: str, options: dict[str, Any], code: str, message: str
) -> None:
    world.features[feature] = False
    world.setup()
    with world.stack.client() as client:
        guid = client.post(
            "/api/v1/messages/", json={}, headers={"x-sm-session-token": world.token}
        ).json()["messageGuid"]
        response = client.put(
            f"/api/v1/messages/{guid}/save",
            json={"messageOptions": options},
            headers={"x-sm-session-token": world.token},
        )
    assert_error(response, 403, code, message)


def test_rule_10_expiry_disabled_75(world: World) -> None:
    world.features["messageExpiry"] = False
    world.setup()
    expiry = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    guid = world.draft(to=[world.user("r")], expiryDate=expiry)
    assert_error(
        world.send(guid), 403, "75", "Message Expiry is disabled. You cannot set an expiry date."
    )


@pytest.mark.parametrize("delta", [timedelta(minutes=-1), timedelta(days=3, minutes=1)])
def test_rule_11_expiry_invalid_76(world: World, delta: timedelta) -> None:
    world.limits["maxExpiryDays"] = 3
    world.setup()
    guid = world.draft(to=[world.user("r")], expiryDate=(datetime.now(UTC) + delta).isoformat())
    assert_error(world.send(guid), 403, "76", "Message Expiry is invalid.")


def test_rule_11_expiry_within_the_limit_is_sent(world: World) -> None:
    world.limits["maxExpiryDays"] = 3
    world.setup()
    expiry = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    guid = world.draft(to=[world.user("r")], expiryDate=expiry)
    response = world.send(guid)
    assert response.status_code == 200
    assert "expires on" in response.json()["notificationBodyText"]


@pytest.mark.parametrize("fyeo", ["AccountPassword", "UniquePassword"])
def test_rule_12_fyeo_password_missing_51(world: World, fyeo: str) -> None:
    world.setup()
    guid = world.draft(to=[world.user("r")], messageOptions={"fyeoType": fyeo})
    assert_error(world.send(guid), 403, "51", "You must pass FYEO message password.")
    assert_error(world.send(guid, password=""), 403, "51", "You must pass FYEO message password.")


@pytest.mark.parametrize(
    ("fyeo", "password"), [("AccountPassword", "not my password"), ("UniquePassword", "short7!")]
)
def test_rule_13_fyeo_password_wrong_38(world: World, fyeo: str, password: str) -> None:
    world.setup()
    guid = world.draft(to=[world.user("r")], messageOptions={"fyeoType": fyeo})
    assert_error(
        world.send(guid, password=password), 403, "38", "Incorrect For Your Eyes Only password."
    )


def test_rule_13_right_fyeo_passwords_send(world: World) -> None:
    world.setup()
    reader = world.user("r")
    account = world.draft(to=[reader], messageOptions={"fyeoType": "AccountPassword"})
    unique = world.draft(to=[reader], messageOptions={"fyeoType": "UniquePassword"})
    assert world.send(account, password=world.password).status_code == 200
    response = world.send(unique, password="eight chars")
    assert response.status_code == 200
    assert "password from the sender" in response.json()["notificationBodyText"]
    with world.stack.database.read_session() as session:
        stored = session.scalars(select(Message.password_hash).where(Message.guid == unique)).one()
    assert stored is not None and stored.startswith("$argon2") and "eight chars" not in stored


# --- rules 14-17 ----------------------------------------------------------------------------


def test_rule_14_no_recipient_is_a_validation_error(world: World) -> None:
    world.setup()
    guid = world.draft(to=[], cc=["   "])
    body = assert_error(world.send(guid), 400, "ValidationException", "'To' must not be empty.")
    assert [e["fieldName"] for e in body["errors"]] == ["To"]


def test_rule_15_recipient_limit_74_counts_distinct_addresses(world: World) -> None:
    world.limits["maxRecipients"] = 2
    world.setup()
    a, b, c = world.user("a"), world.user("b"), world.user("c")
    within = world.draft(to=[a, b.upper()], cc=[b], bcc=[a])  # 2 distinct
    over = world.draft(to=[a], cc=[b], bcc=[c])
    assert world.send(within).status_code == 200
    assert_error(world.send(over), 403, "74", "Message recipients limit reached.")


def test_rule_16_disabled_recipient_8871_names_each(world: World) -> None:
    world.setup()
    ok = world.user("ok")
    off1, off2 = world.user("off1", state="disabled"), world.user("off2", state="disabled")
    guid = world.draft(to=[ok, off1], bcc=[off2])
    body = assert_error(
        world.send(guid),
        403,
        "8871",
        "You are trying to send a secure message to one or more Users that are disabled.",
    )
    assert named_recipients(body) == [("8871", "To", off1), ("8871", "Bcc", off2)]


def test_rule_17_contacts_not_allowed_49(world: World) -> None:
    world.features["sendToContacts"] = False
    world.setup()
    friend, stranger = world.user("friend"), world.user("stranger")
    world.stack.load(
        {"users": [{"email": world.sender, "group": world.group, "contacts": [friend.upper()]}]}
    )
    allowed = world.draft(to=[stranger])
    refused = world.draft(to=[stranger], cc=[friend])
    assert world.send(allowed).status_code == 200
    body = assert_error(
        world.send(refused),
        403,
        "49",
        "Your package does not allow you to send to members in your contact list.",
    )
    assert named_recipients(body) == [("49", "Cc", friend)]


# --- rule 18 --------------------------------------------------------------------------------

BANNED_MESSAGE = (
    "This secure message cannot be sent because it contains the keywords or "
    "strings that are banned."
)


@pytest.mark.parametrize(
    ("subject", "body", "matched"),
    [
        ("Please arrange a WIRE TRANSFER", "b", "wire transfer"),  # group list, any case
        ("s", "Grüße aus der STRASSE von Paris", "straße"),  # global list, case folded
        ("s", "my number is 123-45-6789", r"\b\d{3}-\d{2}-\d{4}\b"),  # a regular expression
    ],
)
def test_rule_18_banned_content_17(world: World, subject: str, body: str, matched: str) -> None:
    world.banned = {"keywords": ["wire transfer"], "regexes": [r"\b\d{3}-\d{2}-\d{4}\b"]}
    world.stack.load({"banned": {"keywords": ["Straße"], "regexes": []}})
    world.setup()
    guid = world.draft(to=[world.user("r")], subject=subject, body=body)
    error = assert_error(world.send(guid), 403, "17", BANNED_MESSAGE)
    assert error["meta"]["matched"].casefold() == matched.casefold()


def test_rule_18_clean_content_and_list_changes_take_effect(world: World) -> None:
    world.banned = {"keywords": ["alpha"], "regexes": []}
    world.setup()
    reader = world.user("r")
    assert world.send(world.draft(to=[reader], body="beta gamma")).status_code == 200
    world.banned = {"keywords": ["gamma"], "regexes": []}
    world.apply_group()
    assert_error(world.send(world.draft(to=[reader], body="beta gamma")), 403, "17", BANNED_MESSAGE)


# --- rules 19-22 ----------------------------------------------------------------------------

INVITE_MESSAGE = "Error to invite new users to the Secure Messaging Platform"


@pytest.mark.parametrize(
    ("setup", "send_body"),
    [
        ("no invite flag", {}),
        ("no invite feature", {"inviteNewUsers": True}),
        ("invite quota", {"inviteNewUsers": True}),
    ],
)
def test_rule_19_invite_30_names_every_new_user(
    world: World, setup: str, send_body: dict[str, Any]
) -> None:
    if setup == "no invite feature":
        world.features["inviteUser"] = False
    if setup == "invite quota":
        world.limits["dailyInvites"] = 1
    world.setup()
    known = world.user("known")
    new1, new2 = f"new1-{world.tag}@example.org", f"New2-{world.tag}@example.org"
    guid = world.draft(to=[known, new1], cc=[new2])
    body = assert_error(world.send(guid, **send_body), 403, "30", INVITE_MESSAGE)
    assert named_recipients(body) == [("30", "To", new1), ("30", "Cc", new2)]
    assert world.quotas()["dailyInvitesLeft"] == world.quotas()["dailyInvitesAllowed"]


def test_rule_19_invalid_address_30(world: World) -> None:
    world.setup()
    guid = world.draft(to=[f"ok-{world.tag}@example.org", "not an address"])
    body = assert_error(world.send(guid, inviteNewUsers=True), 403, "30", INVITE_MESSAGE)
    assert named_recipients(body) == [("30", "To", "not an address")]


@pytest.mark.parametrize(
    ("count", "code", "message"),
    [
        (1, "44", "CRA Input required to send this message to this user"),
        (2, "45", "CRA Input required to send this message to multiple users"),
    ],
)
def test_rules_20_21_cra_required(world: World, count: int, code: str, message: str) -> None:
    world.features["cra"] = True
    world.setup()
    pending = world.user("pending", state="pending")  # still pending registration
    to = [pending] + [f"new{i}-{world.tag}@example.org" for i in range(count - 1)]
    guid = world.draft(to=[world.user("active"), *to])
    body = assert_error(world.send(guid, inviteNewUsers=True), 403, code, message)
    assert [e["meta"]["email"] for e in body["errors"]] == to
    assert world.send(guid, inviteNewUsers=True, craCode="1234").status_code == 200


def test_rule_22_daily_limit_28_and_quotas(world: World) -> None:
    world.limits["dailyMessages"] = 2
    world.limits["dailyInvites"] = 3
    world.setup()
    reader = world.user("r")
    assert world.quotas() == {
        "dailyMessagesAllowed": 2,
        "dailyMessagesLeft": 2,
        "dailyInvitesAllowed": 3,
        "dailyInvitesLeft": 3,
    }
    first = world.draft(to=[reader, f"n-{world.tag}@example.org"])
    assert world.send(first, inviteNewUsers=True).status_code == 200
    assert world.quotas()["dailyMessagesLeft"] == 1 and world.quotas()["dailyInvitesLeft"] == 2
    assert world.send(world.draft(to=[reader])).status_code == 200
    refused = assert_error(
        world.send(world.draft(to=[reader])),
        403,
        "28",
        "You have sent all of your allowed daily secure messages. Please contact the "
        "administrator to upgrade your User Group profile.",
    )
    assert refused["errors"] == []
    assert world.quotas()["dailyMessagesLeft"] == 0


def test_yesterdays_sends_do_not_count_today(world: World) -> None:
    world.limits["dailyMessages"] = 1
    world.setup()
    reader = world.user("r")
    assert world.send(world.draft(to=[reader])).status_code == 200
    with world.stack.database.write_session() as session:
        sender_id = session.scalars(select(User.id).where(User.email == world.sender)).one()
        session.execute(
            update(DailyUsage)
            .where(DailyUsage.user_id == sender_id)
            .values(day=(datetime.now(UTC) - timedelta(days=1)).date())
        )
    assert world.send(world.draft(to=[reader])).status_code == 200


# --- precedence: when two rules fail, the earlier one answers ------------------------------

Prepare = Callable[[World], tuple[str, dict[str, Any]]]


def _limit_and_banned(w: World) -> tuple[str, dict[str, Any]]:
    return w.draft(to=[w.user("a"), w.user("b"), w.user("c")], body="wire transfer"), {}


def _disabled_and_new(w: World) -> tuple[str, dict[str, Any]]:
    return w.draft(to=[f"x-{w.tag}@example.org", w.user("d", state="disabled")]), {}


def _fyeo_and_empty(w: World) -> tuple[str, dict[str, Any]]:
    return w.draft(to=[], messageOptions={"fyeoType": "UniquePassword"}), {}


def _banned_and_quota(w: World) -> tuple[str, dict[str, Any]]:
    reader = w.user("r")
    assert w.send(w.draft(to=[reader])).status_code == 200  # uses the one message of today
    return w.draft(to=[reader], subject="wire transfer"), {}


def _expiry_and_password(w: World) -> tuple[str, dict[str, Any]]:
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    return w.draft(
        to=[w.user("r")], expiryDate=past, messageOptions={"fyeoType": "AccountPassword"}
    ), {"password": "wrong"}


def _cra_and_quota(w: World) -> tuple[str, dict[str, Any]]:
    reader = w.user("r")
    assert w.send(w.draft(to=[reader])).status_code == 200
    return w.draft(to=[f"n-{w.tag}@example.org"]), {"inviteNewUsers": True}


def _contacts_and_invite(w: World) -> tuple[str, dict[str, Any]]:
    friend = w.user("friend")
    w.stack.load({"users": [{"email": w.sender, "group": w.group, "contacts": [friend]}]})
    return w.draft(to=[friend, f"n-{w.tag}@example.org"]), {}


@pytest.mark.parametrize(
    ("prepare", "features", "code"),
    [
        (_limit_and_banned, {}, "74"),
        (_disabled_and_new, {}, "8871"),
        (_fyeo_and_empty, {}, "51"),
        (_banned_and_quota, {}, "17"),
        (_expiry_and_password, {}, "76"),
        (_cra_and_quota, {"cra": True}, "44"),
        (_contacts_and_invite, {"sendToContacts": False}, "49"),
    ],
)
def test_precedence(world: World, prepare: Prepare, features: dict[str, bool], code: str) -> None:
    world.limits.update(maxRecipients=2, dailyMessages=1)
    world.banned = {"keywords": ["wire transfer"], "regexes": []}
    world.features.update(features)
    world.setup()
    guid, body = prepare(world)
    before = world.quotas()
    response = world.send(guid, **body)
    assert response.status_code in (400, 403)
    assert response.json()["responseStatus"]["errorCode"] == code
    assert world.quotas() == before  # a refused send uses no quota
    with world.stack.database.read_session() as session:
        status = session.scalars(select(Message.status).where(Message.guid == guid)).one()
    assert status is MessageStatus.DRAFT

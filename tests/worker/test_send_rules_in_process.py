"""SPEC 3.1 rules 1-22 in-process: `send_message` called on a session of a migrated
database (SQLite and PostgreSQL), no HTTP and no worker process. Each refusal answers its
exact status, code and message (and the recipients it names), and changes nothing in the
database but the job's record of the answer; rule 4 answers a second send from the first.
`test_send_rules.py` checks the same rules end to end, through HTTP and a live worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.factories import DomainWorld, Snapshot
from tests.support import assert_error_body, named_recipients
from worker.db import Database
from worker.domain import banned, errors
from worker.domain.errors import ErrorKind
from worker.domain.send import SendOutcome
from worker.models import (
    Delivery,
    FyeoType,
    Invitation,
    JobStatus,
    Message,
    MessageAction,
    MessageStatus,
    OutboxEmail,
    User,
    UserState,
    new_guid,
)
from worker.settings import Settings

NO_RECIPIENT = "'To' must not be empty."  # rule 14's message (a validation error's own)


@pytest.fixture(autouse=True)
def _fresh_banned_matchers() -> Iterator[None]:
    # Group ids repeat across the two databases: a matcher built for one must not answer
    # for the other.
    banned.clear_matcher_cache()
    yield
    banned.clear_matcher_cache()


@pytest.fixture
def world(module_database: tuple[Settings, Database], unique: str) -> DomainWorld:
    settings, database = module_database
    return DomainWorld(database, settings, unique)


def _changes(before: Snapshot, after: Snapshot) -> dict[str, list[dict[str, Any]]]:
    """Rows of `after` that `before` does not have, and the reverse, per table."""
    changed: dict[str, list[dict[str, Any]]] = {}
    for table in before:
        added = [row for row in after[table] if row not in before[table]]
        removed = [row for row in before[table] if row not in after[table]]
        if added or removed:
            changed[table] = added + removed
    return changed


def refused(
    world: DomainWorld,
    guid: str,
    kind: ErrorKind,
    *,
    sender: str | None = None,
    job_recorded: bool = True,
    message: str | None = None,
    **send: Any,
) -> dict[str, Any]:
    """Send `guid` and check it is refused with `kind` (its status, code and message) and
    that the database is as it was, but for the job row recording that answer. Returns the
    `responseStatus`."""
    if "sender_guid" not in send:
        world.login(sender or world.sender)  # the session exists before, as in production
    before = world.snapshot()
    outcome = world.send(guid, sender=sender, **send)
    body = assert_error_body(
        outcome.http_status, outcome.body, kind.http_status, kind.code, message or kind.message
    )
    assert outcome.email_ids == ()
    changes = _changes(before, world.snapshot())
    jobs = changes.pop("send_jobs", [])
    assert changes == {}, f"a refused send changed {sorted(changes)}"
    if job_recorded:
        assert len(jobs) == 1, jobs
        assert jobs[0]["status"] == JobStatus.FAILED
        assert (jobs[0]["http_status"], jobs[0]["result_code"]) == (kind.http_status, kind.code)
        assert jobs[0]["response"] == outcome.body
    else:
        assert jobs == []
    return body


def sent(world: DomainWorld, guid: str, **send: Any) -> SendOutcome:
    outcome = world.send(guid, **send)
    assert outcome.http_status == 200, outcome.body
    assert outcome.body["responseStatus"] is None
    assert world.status_of(guid) is MessageStatus.SENT
    return outcome


# --- a send that passes every rule ----------------------------------------------------------


def test_a_send_that_passes_every_rule(world: DomainWorld) -> None:
    world.setup()
    reader = world.user("reader")
    new = f"New-{world.tag}@example.org"
    guid = world.draft(to=[reader, reader.upper()], bcc=[new])
    outcome = sent(world, guid, invite_new_users=True)
    assert outcome.body["notificationSent"] is True
    assert "secure message" in outcome.body["notificationBodyText"]
    assert world.usage() == (1, 1)
    with world.database.read_session() as session:
        message_id = session.scalars(select(Message.id).where(Message.guid == guid)).one()
        deliveries = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.message_id == message_id)
        )
        emails = session.scalars(
            select(OutboxEmail.kind).where(OutboxEmail.message_id == message_id)
        ).all()
        invited = session.scalars(select(User).where(User.email == new.casefold())).one()
        invitations = session.scalar(
            select(func.count()).select_from(Invitation).where(Invitation.user_id == invited.id)
        )
    assert deliveries == 2  # distinct recipients
    assert sorted(emails) == ["invitation", "notification", "notification"]
    assert invited.state is UserState.PENDING and invitations == 1
    assert len(outcome.email_ids) == 3


def test_a_recipient_the_database_cannot_fold_is_still_found(world: DomainWorld) -> None:
    """The draft's read finds recipients' users by an address the database folds
    (lower, trim); `normalize_email` also folds beyond ASCII (casefold: ß is ss). Such an
    address is looked up apart, so its user is found, not taken for a new one (rule 19)."""
    world.setup()
    reader = world.user("strasse")  # strasse-…@example.com
    typed = "STRAßE" + reader.removeprefix("strasse")
    assert typed.casefold() == reader and typed.lower() != reader
    guid = world.draft(to=[typed])
    sent(world, guid)  # invite_new_users is off: a user taken for new would answer 30
    with world.database.read_session() as session:
        reader_id = session.scalars(select(User.id).where(User.email == reader)).one()
        delivered_to = session.scalars(
            select(Delivery.user_id).join(Message).where(Message.guid == guid)
        ).all()
    assert delivered_to == [reader_id]


# --- rules 1-4: who sends what --------------------------------------------------------------


def test_rule_1_unknown_sender_811(world: DomainWorld) -> None:
    world.setup()
    guid = world.draft(to=[world.user("r")])
    refused(world, guid, errors.SESSION_INVALID, sender_guid=new_guid(), job_recorded=False)


@pytest.mark.parametrize("whose", ["missing", "another sender's"])
def test_rule_2_message_not_found_929(world: DomainWorld, whose: str) -> None:
    world.setup()
    reader = world.user("r")
    if whose == "missing":
        guid = new_guid()
    else:
        other = world.user("other")
        guid = world.draft(to=[reader], sender=other)
    refused(world, guid, errors.MESSAGE_NOT_FOUND)


def test_rule_3_recalled_message_915(world: DomainWorld) -> None:
    world.setup()
    guid = world.sent_message([world.user("r")])
    world.update_message(guid, status=MessageStatus.RECALLED, recall_date=world.now)
    refused(world, guid, errors.MESSAGE_RECALLED)  # before rule 4: no stored response


@pytest.mark.parametrize("action", [MessageAction.REPLY, MessageAction.FORWARD])
def test_rule_3_recalled_parent_915(world: DomainWorld, action: MessageAction) -> None:
    world.setup()
    reader, parent = _reader_of_a_message(world)
    draft = world.draft(sender=reader, action=action, parent=parent, to=[world.sender])
    world.update_message(parent, status=MessageStatus.RECALLED, recall_date=world.now)
    refused(world, draft, errors.MESSAGE_RECALLED, sender=reader)


def test_rule_4_a_second_send_answers_the_first_and_changes_nothing(world: DomainWorld) -> None:
    world.setup()
    guid = world.draft(to=[world.user("r"), f"n-{world.tag}@example.org"])
    first = sent(world, guid, invite_new_users=True)
    before = world.snapshot()
    again = world.send(guid, invite_new_users=True, send_email_notification=False)
    assert (again.http_status, again.body) == (200, first.body)
    assert again.email_ids == ()  # nothing queued again
    changes = _changes(before, world.snapshot())
    jobs = changes.pop("send_jobs", [])
    assert changes == {}  # no delivery, email, invitation or quota more
    assert [(j["status"], j["http_status"], j["result_code"]) for j in jobs] == [
        (JobStatus.SUCCEEDED, 200, "OK")
    ]
    assert world.usage() == (1, 1)


# --- rules 5-7: what the parent allows ------------------------------------------------------


def _reader_of_a_message(world: DomainWorld) -> tuple[str, str]:
    """A reader, and a message the world's sender sent it."""
    reader = world.user("reader")
    return reader, world.sent_message([reader])


@pytest.mark.parametrize(
    ("action", "forbidden", "kind"),
    [
        (MessageAction.FORWARD, "allow_forward", errors.FORWARD_NOT_ALLOWED),
        (MessageAction.REPLY, "allow_reply", errors.REPLY_NOT_ALLOWED),
        (MessageAction.REPLY_ALL, "allow_reply_all", errors.REPLY_ALL_NOT_ALLOWED),
    ],
)
def test_rules_5_6_7_what_the_parent_forbids(
    world: DomainWorld, action: MessageAction, forbidden: str, kind: ErrorKind
) -> None:
    world.setup()
    reader, parent = _reader_of_a_message(world)
    to = [world.user("other")] if action is MessageAction.FORWARD else [world.sender]
    draft = world.draft(sender=reader, action=action, parent=parent, to=to)
    allowed = world.draft(sender=reader, action=action, parent=parent, to=to)
    sent(world, allowed, sender=reader)
    world.update_message(parent, **{forbidden: False})  # changed after the drafts were made
    refused(world, draft, kind, sender=reader)


def test_rule_7_a_reply_to_anyone_but_the_parents_sender_77(world: DomainWorld) -> None:
    world.setup()
    reader, parent = _reader_of_a_message(world)
    world.update_message(parent, allow_reply_all=False)
    draft = world.draft(sender=reader, action=MessageAction.REPLY, parent=parent, to=[world.sender])
    world.set_recipients(draft, to=[world.sender], bcc=[world.user("bystander")])
    refused(world, draft, errors.REPLY_ALL_NOT_ALLOWED, sender=reader)
    world.set_recipients(draft, to=[f" {world.sender.upper()} "])  # the sender, any case
    sent(world, draft, sender=reader)


# --- rules 8-13: options of the group, and the FYEO password --------------------------------


@pytest.mark.parametrize(
    ("columns", "feature", "kind"),
    [
        ({"fyeo_type": FyeoType.ACCOUNT_PASSWORD}, "feature_fyeo", errors.NO_FYEO_FEATURE),
        ({"fyeo_type": FyeoType.UNIQUE_PASSWORD}, "feature_fyeo", errors.NO_FYEO_FEATURE),
        ({"confidential": True}, "feature_confidential", errors.NO_CONFIDENTIAL_FEATURE),
    ],
)
def test_rules_8_9_options_the_group_lacks(
    world: DomainWorld, columns: dict[str, Any], feature: str, kind: ErrorKind
) -> None:
    world.setup()
    guid = world.draft(to=[world.user("r")], **columns)
    world.update_group(**{feature: False})  # the package changed after the draft was saved
    refused(world, guid, kind, password=world.password)


def test_rule_10_expiry_disabled_75(world: DomainWorld) -> None:
    world.features["messageExpiry"] = False
    world.setup()
    guid = world.draft(to=[world.user("r")], expiry_date=world.now + timedelta(days=1))
    refused(world, guid, errors.EXPIRY_DISABLED)


@pytest.mark.parametrize(
    "delta", [timedelta(minutes=-1), timedelta(0), timedelta(days=3, seconds=1)]
)
def test_rule_11_expiry_invalid_76(world: DomainWorld, delta: timedelta) -> None:
    world.limits["maxExpiryDays"] = 3
    world.setup()
    guid = world.draft(to=[world.user("r")], expiry_date=world.now + delta)
    refused(world, guid, errors.EXPIRY_INVALID)


@pytest.mark.parametrize("delta", [timedelta(seconds=1), timedelta(days=3)])
def test_rule_11_expiry_within_the_limit_is_sent(world: DomainWorld, delta: timedelta) -> None:
    world.limits["maxExpiryDays"] = 3
    world.setup()
    guid = world.draft(to=[world.user("r")], expiry_date=world.now + delta)
    assert "expires on" in sent(world, guid).body["notificationBodyText"]


@pytest.mark.parametrize("fyeo", [FyeoType.ACCOUNT_PASSWORD, FyeoType.UNIQUE_PASSWORD])
def test_rule_12_fyeo_password_missing_51(world: DomainWorld, fyeo: FyeoType) -> None:
    world.setup()
    guid = world.draft(to=[world.user("r")], fyeo_type=fyeo)
    refused(world, guid, errors.FYEO_PASSWORD_MISSING)


@pytest.mark.parametrize(
    ("fyeo", "password"),
    [(FyeoType.ACCOUNT_PASSWORD, "not my password"), (FyeoType.UNIQUE_PASSWORD, "seven c")],
)
def test_rule_13_fyeo_password_wrong_38(world: DomainWorld, fyeo: FyeoType, password: str) -> None:
    world.setup()
    guid = world.draft(to=[world.user("r")], fyeo_type=fyeo)
    refused(world, guid, errors.FYEO_PASSWORD_WRONG, password=password)


def test_rule_13_right_fyeo_passwords_send(world: DomainWorld) -> None:
    world.setup()
    reader = world.user("r")
    account = world.draft(to=[reader], fyeo_type=FyeoType.ACCOUNT_PASSWORD)
    unique = world.draft(to=[reader], fyeo_type=FyeoType.UNIQUE_PASSWORD)
    sent(world, account, password=world.password)
    sent(world, unique, password="eight ch")
    with world.database.read_session() as session:
        stored = session.scalars(select(Message.password_hash).where(Message.guid == unique)).one()
    assert stored is not None and stored.startswith("$argon2") and "eight ch" not in stored


# --- rules 14-17: who the recipients are ----------------------------------------------------


def test_rule_14_no_recipient_is_a_validation_error(world: DomainWorld) -> None:
    world.setup()
    guid = world.draft(to=[])
    body = refused(world, guid, errors.VALIDATION, message=NO_RECIPIENT)
    assert [(e["errorCode"], e["fieldName"]) for e in body["errors"]] == [("NotEmpty", "To")]


def test_rule_15_recipient_limit_74_counts_distinct_addresses(world: DomainWorld) -> None:
    world.limits["maxRecipients"] = 2
    world.setup()
    a, b, c = world.user("a"), world.user("b"), world.user("c")
    sent(world, world.draft(to=[a, b.upper()], cc=[b], bcc=[a]))  # 2 distinct
    refused(world, world.draft(to=[a], cc=[b], bcc=[c]), errors.RECIPIENTS_LIMIT)


def test_rule_16_disabled_recipient_8871_names_each(world: DomainWorld) -> None:
    world.setup()
    ok = world.user("ok")
    off1, off2 = world.user("off1", state="disabled"), world.user("off2", state="disabled")
    guid = world.draft(to=[ok, off1], bcc=[off2])
    body = refused(world, guid, errors.RECIPIENT_DISABLED)
    assert named_recipients(body) == [("8871", "To", off1), ("8871", "Bcc", off2)]


def test_rule_17_contacts_not_allowed_49(world: DomainWorld) -> None:
    world.features["sendToContacts"] = False
    world.setup()
    friend, stranger = world.user("friend"), world.user("stranger")
    world.add_contacts(world.sender, friend.upper())
    sent(world, world.draft(to=[stranger]))
    body = refused(world, world.draft(to=[stranger], cc=[friend]), errors.CONTACTS_NOT_ALLOWED)
    assert named_recipients(body) == [("49", "Cc", friend)]


def test_rule_17_contacts_allowed_by_the_group(world: DomainWorld) -> None:
    world.setup()
    friend = world.user("friend")
    world.add_contacts(world.sender, friend)
    sent(world, world.draft(to=[friend]))


# --- rule 18: content -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "body", "matched"),
    [
        ("Please arrange a WIRE TRANSFER", "b", "wire transfer"),  # group list, any case
        ("s", "Grüße aus der STRASSE von Paris", "straße"),  # global list, case folded
        ("s", "my number is 123-45-6789", r"\b\d{3}-\d{2}-\d{4}\b"),  # a regular expression
    ],
)
def test_rule_18_banned_content_17(
    world: DomainWorld, subject: str, body: str, matched: str
) -> None:
    world.banned = {"keywords": ["wire transfer"], "regexes": [r"\b\d{3}-\d{2}-\d{4}\b"]}
    world.load({"banned": {"keywords": ["Straße"], "regexes": []}})
    world.setup()
    guid = world.draft(to=[world.user("r")], subject=subject, body=body)
    error = refused(world, guid, errors.BANNED_CONTENT)
    assert error["meta"]["matched"].casefold() == matched.casefold()


def test_rule_18_a_changed_list_takes_effect(world: DomainWorld) -> None:
    world.banned = {"keywords": ["alpha"], "regexes": []}
    world.setup()
    reader = world.user("r")
    sent(world, world.draft(to=[reader], body="beta gamma"))
    world.banned = {"keywords": ["gamma"], "regexes": []}
    world.apply_group()  # the matcher this process built for the group is stale now
    refused(world, world.draft(to=[reader], body="beta gamma"), errors.BANNED_CONTENT)


# --- rules 19-22: invitations, CRA, the daily quota -----------------------------------------


@pytest.mark.parametrize(
    "why", ["no invite flag", "no invite feature", "invite quota", "invite quota, before CRA"]
)
def test_rule_19_invite_30_names_every_new_user(world: DomainWorld, why: str) -> None:
    if why == "no invite feature":
        world.features["inviteUser"] = False
    if why.startswith("invite quota"):
        world.limits["dailyInvites"] = 3
    if why.endswith("before CRA"):
        world.features["cra"] = True  # rule 20/21 would answer, were rule 19 not first
    world.setup()
    if why.startswith("invite quota"):
        world.use_quota(invites=2)  # one left, two needed
    known = world.user("known")
    new1, new2 = f"new1-{world.tag}@example.org", f"New2-{world.tag}@example.org"
    guid = world.draft(to=[known, new1], cc=[new2])
    body = refused(world, guid, errors.INVITE_FAILED, invite_new_users=why != "no invite flag")
    assert named_recipients(body) == [("30", "To", new1), ("30", "Cc", new2)]


def test_rule_19_invalid_address_30(world: DomainWorld) -> None:
    world.setup()
    guid = world.draft(to=[f"ok-{world.tag}@example.org", "not an address"])
    body = refused(world, guid, errors.INVITE_FAILED, invite_new_users=True)
    assert named_recipients(body) == [("30", "To", "not an address")]


@pytest.mark.parametrize(
    ("count", "kind"), [(1, errors.CRA_REQUIRED_ONE), (2, errors.CRA_REQUIRED_MANY)]
)
def test_rules_20_21_cra_required(world: DomainWorld, count: int, kind: ErrorKind) -> None:
    world.features["cra"] = True
    world.setup()
    pending = world.user("pending", state="pending")  # still pending registration
    needing = [pending] + [f"new{i}-{world.tag}@example.org" for i in range(count - 1)]
    guid = world.draft(to=[world.user("active"), *needing])
    body = refused(world, guid, kind, invite_new_users=True)
    assert named_recipients(body) == [(kind.code, "To", email) for email in needing]
    sent(world, guid, invite_new_users=True, cra_code="1234")


def test_rules_20_21_cra_not_needed_without_the_feature(world: DomainWorld) -> None:
    world.setup()
    sent(world, world.draft(to=[world.user("pending", state="pending")]))


def test_rule_22_daily_limit_28(world: DomainWorld) -> None:
    world.limits["dailyMessages"] = 2
    world.setup()
    reader = world.user("r")
    sent(world, world.draft(to=[reader]))
    sent(world, world.draft(to=[reader]))
    assert world.usage() == (2, 0)
    body = refused(world, world.draft(to=[reader]), errors.DAILY_LIMIT_REACHED)
    assert body["errors"] == []
    assert world.usage() == (2, 0)
    # A new UTC day, a new quota.
    sent(world, world.draft(to=[reader]), now=world.now + timedelta(days=1))


# --- the order: with every rule failing, each answers in turn -------------------------------


def test_rules_8_to_22_answer_in_the_order_of_the_table(world: DomainWorld) -> None:
    """One draft that breaks rules 8 to 22 at once: sent again after each answer with
    that one cause removed, the next rule of the table answers."""
    world.features.update(
        fyeo=False,
        confidential=False,
        messageExpiry=False,
        sendToContacts=False,
        inviteUser=False,
        cra=True,
    )
    world.limits.update(maxRecipients=3, maxExpiryDays=1, dailyMessages=1)
    world.banned = {"keywords": ["forbidden"], "regexes": []}
    world.setup()
    world.use_quota(messages=1)
    disabled, friend = world.user("off", state="disabled"), world.user("friend")
    pending = world.user("pending", state="pending")
    world.add_contacts(world.sender, friend)
    guid = world.draft(
        to=[],
        subject="forbidden",
        fyeo_type=FyeoType.UNIQUE_PASSWORD,  # no argon2 check at every step
        confidential=True,
        expiry_date=world.now - timedelta(hours=1),
    )
    send: dict[str, Any] = {}
    recipients = [disabled, friend, pending, f"new-{world.tag}@example.org"]

    fixes: list[tuple[ErrorKind, Callable[[], None]]] = [
        (errors.NO_FYEO_FEATURE, lambda: world.update_group(feature_fyeo=True)),
        (errors.NO_CONFIDENTIAL_FEATURE, lambda: world.update_group(feature_confidential=True)),
        (errors.EXPIRY_DISABLED, lambda: world.update_group(feature_message_expiry=True)),
        (
            errors.EXPIRY_INVALID,
            lambda: world.update_message(guid, expiry_date=world.now + timedelta(hours=1)),
        ),
        (errors.FYEO_PASSWORD_MISSING, lambda: send.update(password="seven c")),
        (errors.FYEO_PASSWORD_WRONG, lambda: send.update(password="eight ch")),
        (errors.VALIDATION, lambda: world.set_recipients(guid, to=recipients)),
        (errors.RECIPIENTS_LIMIT, lambda: world.update_group(max_recipients=4)),
        (errors.RECIPIENT_DISABLED, lambda: world.set_user_state(disabled, UserState.ACTIVE)),
        (
            errors.CONTACTS_NOT_ALLOWED,
            lambda: world.update_group(feature_send_to_contacts=True),
        ),
        (errors.BANNED_CONTENT, lambda: world.update_message(guid, subject="fine")),
        (errors.INVITE_FAILED, lambda: send.update(invite_new_users=True)),
        (errors.INVITE_FAILED, lambda: world.update_group(feature_invite_user=True)),
        (errors.CRA_REQUIRED_MANY, lambda: send.update(cra_code="1234")),
        (errors.DAILY_LIMIT_REACHED, lambda: world.update_group(daily_messages=2)),
    ]
    answered = []
    for kind, fix in fixes:
        body = refused(
            world,
            guid,
            kind,
            message=NO_RECIPIENT if kind is errors.VALIDATION else None,
            **send,
        )
        answered.append(body["errorCode"])
        fix()
    sent(world, guid, **send)
    assert answered == [kind.code for kind, _ in fixes]
    assert world.usage() == (2, 1)

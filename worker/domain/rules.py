"""The SendMessage rules of SPEC 3.1, one small check each, in the order of the table.

`SEND_RULES` is the order they run in; the first that raises answers. Rules 1 (session,
in the shim), 2-4 (lookup, recall, already sent: `send.py`) come before these. Rule 22,
the last, *claims* today's message and invites in one conditional statement, so
concurrent sends can never take a sender past a limit, and no rule writes anything
before every rule has passed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any, ClassVar

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from worker.domain import errors
from worker.domain.attachments import AttachmentInfo, check_complete
from worker.domain.auth import normalize_email
from worker.domain.banned import matcher_for_group
from worker.domain.drafts import Addressee, Draft, Sender, SenderGroup
from worker.domain.errors import ApiError, FieldError
from worker.domain.secrets import verify_password
from worker.models import (
    Contact,
    DailyUsage,
    FyeoType,
    Group,
    Message,
    MessageAction,
    RecipientKind,
    UserState,
    table,
)

# Deliberately simple: one @, no spaces or control characters, a dot in the domain.
EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
MAX_EMAIL_LENGTH = 254


@dataclass(frozen=True, slots=True)
class QuotaClaim:
    """What a send adds to its sender's counters for today, and the limits they must stay
    within (the sender's group's)."""

    user_id: int
    day: date
    messages: int
    invites: int
    max_messages: int
    max_invites: int

    # The parameters of the statements that make the claim (`params`).
    PARAMS: ClassVar[tuple[str, ...]] = (
        "user_id",
        "day",
        "messages_sent",
        "invites_sent",
        "max_messages",
        "max_invites",
    )

    @property
    def within_limits(self) -> bool:
        """Whether the claim alone fits: a claim that does not is refused unwritten."""
        return self.messages <= self.max_messages and self.invites <= self.max_invites

    def params(self) -> dict[str, Any]:
        """Its values by the names in `PARAMS`."""
        return {
            "user_id": self.user_id,
            "day": self.day,
            "messages_sent": self.messages,
            "invites_sent": self.invites,
            "max_messages": self.max_messages,
            "max_invites": self.max_invites,
        }


@dataclass(frozen=True, slots=True)
class Address:
    """One distinct recipient address: its first To/Cc/Bcc field and its folded form."""

    kind: RecipientKind
    address: str
    email: str


@dataclass
class SendContext:
    """Everything the rules look at, loaded once per send."""

    session: Session
    message: Draft
    sender: Sender
    parent: Message | None
    password: str
    cra_code: str
    invite_new_users: bool
    now: datetime
    addresses: list[Address]
    users_by_email: dict[str, Addressee]
    # Whether the send's one write statement can claim the quota (PostgreSQL:
    # worker.domain.send_writes): then rule 22 leaves a send that invites nobody to it.
    claims_with_the_writes: bool = False
    new_addresses: list[Address] = field(default_factory=list)
    # The claim rule 22 left to the send's write statement, if it did.
    deferred_claim: QuotaClaim | None = None
    # The draft's files (read only when it has some).
    attachments: tuple[AttachmentInfo, ...] = ()

    @property
    def group(self) -> SenderGroup:
        return self.sender.group

    @property
    def today(self) -> date:
        return self.now.date()


def is_valid_email(address: str) -> bool:
    return len(address) <= MAX_EMAIL_LENGTH and EMAIL_RE.match(address) is not None


def _field_errors(code: str, addresses: list[Address]) -> list[FieldError]:
    return [
        FieldError(code, a.kind.value, f"Recipient {a.address}", meta={"email": a.address})
        for a in addresses
    ]


# --- rules 5-7: what the parent allows (also checked at PreCreateMessage/SaveMessage) -----


def check_forward_allowed(action: MessageAction, parent: Message | None) -> None:
    """Rule 5 (909)."""
    if action is MessageAction.FORWARD and parent is not None and not parent.allow_forward:
        raise ApiError(errors.FORWARD_NOT_ALLOWED)


def check_reply_allowed(action: MessageAction, parent: Message | None) -> None:
    """Rule 6 (908)."""
    if action is MessageAction.REPLY and parent is not None and not parent.allow_reply:
        raise ApiError(errors.REPLY_NOT_ALLOWED)


def check_reply_all_allowed(
    action: MessageAction, parent: Message | None, emails: list[str] | None
) -> None:
    """Rule 7 (77): ReplyAll, or a Reply to anyone but the parent's sender, when the
    parent forbids reply-all. `emails` None means the recipients are not known yet."""
    if parent is None or parent.allow_reply_all:
        return
    if action is MessageAction.REPLY_ALL:
        raise ApiError(errors.REPLY_ALL_NOT_ALLOWED)
    if action is MessageAction.REPLY and emails is not None:
        if any(e != parent.sender.email for e in emails):
            raise ApiError(errors.REPLY_ALL_NOT_ALLOWED)


def rule_05_forward(ctx: SendContext) -> None:
    check_forward_allowed(ctx.message.action, ctx.parent)


def rule_06_reply(ctx: SendContext) -> None:
    check_reply_allowed(ctx.message.action, ctx.parent)


def rule_07_reply_all(ctx: SendContext) -> None:
    check_reply_all_allowed(ctx.message.action, ctx.parent, [a.email for a in ctx.addresses])


# --- rules 8-13: options the sender's group must allow, and the FYEO password ------------


def check_fyeo_feature(fyeo_type: FyeoType, group: Group | SenderGroup) -> None:
    """Rule 8 (922)."""
    if fyeo_type is not FyeoType.DISABLED and not group.feature_fyeo:
        raise ApiError(errors.NO_FYEO_FEATURE)


def check_confidential_feature(confidential: bool, group: Group | SenderGroup) -> None:
    """Rule 9 (930)."""
    if confidential and not group.feature_confidential:
        raise ApiError(errors.NO_CONFIDENTIAL_FEATURE)


def rule_08_fyeo_feature(ctx: SendContext) -> None:
    check_fyeo_feature(ctx.message.fyeo_type, ctx.group)


def rule_09_confidential_feature(ctx: SendContext) -> None:
    check_confidential_feature(ctx.message.confidential, ctx.group)


def rule_10_expiry_enabled(ctx: SendContext) -> None:
    if ctx.message.expiry_date is not None and not ctx.group.feature_message_expiry:
        raise ApiError(errors.EXPIRY_DISABLED)


def rule_11_expiry_valid(ctx: SendContext) -> None:
    expiry = ctx.message.expiry_date
    if expiry is None:
        return
    latest = ctx.now + timedelta(days=ctx.group.max_expiry_days)
    if expiry <= ctx.now or expiry > latest:
        raise ApiError(errors.EXPIRY_INVALID)


def rule_12_fyeo_password_given(ctx: SendContext) -> None:
    if ctx.message.fyeo_type is not FyeoType.DISABLED and not ctx.password:
        raise ApiError(errors.FYEO_PASSWORD_MISSING)


UNIQUE_PASSWORD_MIN_LENGTH = 8


def rule_13_fyeo_password_valid(ctx: SendContext) -> None:
    fyeo = ctx.message.fyeo_type
    if fyeo is FyeoType.ACCOUNT_PASSWORD:
        if not verify_password(ctx.sender.password_hash, ctx.password):
            raise ApiError(errors.FYEO_PASSWORD_WRONG)
    elif fyeo is FyeoType.UNIQUE_PASSWORD and len(ctx.password) < UNIQUE_PASSWORD_MIN_LENGTH:
        raise ApiError(errors.FYEO_PASSWORD_WRONG)


# --- rules 14-17: who the recipients are -------------------------------------------------


def rule_14_has_recipients(ctx: SendContext) -> None:
    if not ctx.addresses:
        raise errors.validation_error(
            FieldError("NotEmpty", "To", "'To' must not be empty."),
            message="'To' must not be empty.",
        )


def rule_14a_attachments_complete(ctx: SendContext) -> None:
    """SPEC 9: right after rule 14, every file of the draft completely uploaded."""
    check_complete(ctx.attachments)


def rule_15_recipient_limit(ctx: SendContext) -> None:
    if len(ctx.addresses) > ctx.group.max_recipients:
        raise ApiError(errors.RECIPIENTS_LIMIT)


def rule_16_no_disabled_recipient(ctx: SendContext) -> None:
    disabled = [
        a
        for a in ctx.addresses
        if (user := ctx.users_by_email.get(a.email)) is not None
        and user.state is UserState.DISABLED
    ]
    if disabled:
        raise ApiError(errors.RECIPIENT_DISABLED, errors=_field_errors("8871", disabled))


def rule_17_contacts_allowed(ctx: SendContext) -> None:
    if ctx.group.feature_send_to_contacts:
        return
    contacts = set(
        ctx.session.scalars(
            select(Contact.email).where(
                Contact.owner_id == ctx.sender.id,
                Contact.email.in_([a.email for a in ctx.addresses]),
            )
        )
    )
    in_contacts = [a for a in ctx.addresses if a.email in contacts]
    if in_contacts:
        raise ApiError(errors.CONTACTS_NOT_ALLOWED, errors=_field_errors("49", in_contacts))


# --- rule 18: content --------------------------------------------------------------------


def rule_18_banned_content(ctx: SendContext) -> None:
    matcher = matcher_for_group(ctx.session, ctx.group)
    for text in (ctx.message.subject, ctx.message.body):
        matched = matcher.first_match(text)
        if matched is not None:
            raise ApiError(errors.BANNED_CONTENT, meta={"matched": matched})


# --- rules 19-22: invitations, CRA and the daily quotas ----------------------------------


def claim_quota(session: Session, claim: QuotaClaim) -> bool:
    """Atomically add `claim` to today's counters if that stays within its limits.

    One `INSERT … ON CONFLICT DO UPDATE … WHERE` statement: the row lock (PostgreSQL) or
    the write lock taken at BEGIN IMMEDIATE (SQLite) makes concurrent claims queue, and
    the condition is checked against the latest counts, so the limit can never be
    exceeded. Returns False (and changes nothing) when the limit would be passed. (The
    send's write statement on PostgreSQL makes the same claim: worker.domain.send_writes.)
    """
    if not claim.within_limits:
        return False
    connection = session.connection()
    claimed = connection.execute(_claim_statement(connection.dialect.name), claim.params())
    return claimed.first() is not None


@cache
def _claim_statement(dialect: str) -> ReturningInsert[tuple[int]]:
    """`claim_quota`'s statement, built once per dialect (it is on every send's path)."""
    usage = table(DailyUsage)
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(usage)
    added = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["user_id", "day"],
        set_={
            "messages_sent": usage.c.messages_sent + added.messages_sent,
            "invites_sent": usage.c.invites_sent + added.invites_sent,
        },
        where=(usage.c.messages_sent + added.messages_sent <= bindparam("max_messages"))
        & (usage.c.invites_sent + added.invites_sent <= bindparam("max_invites")),
    ).returning(usage.c.id)


def _invites_left(ctx: SendContext) -> int:
    used = ctx.session.scalar(
        select(DailyUsage.invites_sent).where(
            DailyUsage.user_id == ctx.sender.id, DailyUsage.day == ctx.today
        )
    )
    return ctx.group.daily_invites - (used or 0)


def rule_19_invitations(ctx: SendContext) -> None:
    new = [a for a in ctx.addresses if a.email not in ctx.users_by_email]
    ctx.new_addresses = new
    if not new:
        return
    if not ctx.invite_new_users or not ctx.group.feature_invite_user:
        raise ApiError(errors.INVITE_FAILED, errors=_field_errors("30", new))
    invalid = [a for a in new if not is_valid_email(a.address.strip())]
    if invalid:
        raise ApiError(errors.INVITE_FAILED, errors=_field_errors("30", invalid))
    # Only a check here; rule 22 claims invites and the message together, atomically.
    if _invites_left(ctx) < len(new):
        raise ApiError(errors.INVITE_FAILED, errors=_field_errors("30", new))


def _needs_cra(ctx: SendContext) -> list[Address]:
    invited = {a.email for a in ctx.new_addresses}
    return [
        a
        for a in ctx.addresses
        if a.email in invited
        or ((u := ctx.users_by_email.get(a.email)) is not None and u.state is UserState.PENDING)
    ]


def rule_20_21_cra(ctx: SendContext) -> None:
    if not ctx.group.feature_cra or ctx.cra_code:
        return
    needing = _needs_cra(ctx)
    if len(needing) == 1:
        raise ApiError(errors.CRA_REQUIRED_ONE, errors=_field_errors("44", needing))
    if len(needing) > 1:
        raise ApiError(errors.CRA_REQUIRED_MANY, errors=_field_errors("45", needing))


def rule_22_daily_messages(ctx: SendContext) -> None:
    """The one write among the rules: claim today's message and invites in one statement.
    Nothing is written before it, so a failing rule leaves nothing to undo.

    On PostgreSQL a send that invites nobody leaves its claim to the statement that
    writes the send (`ctx.deferred_claim`; one round trip less): no rule comes after this
    one and the send writes nothing else before that statement, which writes nothing if
    the claim fails; the send then answers this rule's error (worker.domain.send)."""
    invites = len(ctx.new_addresses)
    claim = QuotaClaim(
        user_id=ctx.sender.id,
        day=ctx.today,
        messages=1,
        invites=invites,
        max_messages=ctx.group.daily_messages,
        max_invites=ctx.group.daily_invites,
    )
    if not invites and ctx.claims_with_the_writes and claim.within_limits:
        ctx.deferred_claim = claim
        return
    if claim_quota(ctx.session, claim):
        return
    if invites and _invites_left(ctx) < invites:
        # A concurrent send took the invites rule 19 saw: that rule is the one failing.
        raise ApiError(errors.INVITE_FAILED, errors=_field_errors("30", ctx.new_addresses))
    raise ApiError(errors.DAILY_LIMIT_REACHED)


SendRule = Callable[[SendContext], None]

SEND_RULES: tuple[SendRule, ...] = (
    rule_05_forward,
    rule_06_reply,
    rule_07_reply_all,
    rule_08_fyeo_feature,
    rule_09_confidential_feature,
    rule_10_expiry_enabled,
    rule_11_expiry_valid,
    rule_12_fyeo_password_given,
    rule_13_fyeo_password_valid,
    rule_14_has_recipients,
    rule_14a_attachments_complete,
    rule_15_recipient_limit,
    rule_16_no_disabled_recipient,
    rule_17_contacts_allowed,
    rule_18_banned_content,
    rule_19_invitations,
    rule_20_21_cra,
    rule_22_daily_messages,
)


def distinct_addresses(recipients: list[tuple[RecipientKind, str]]) -> list[Address]:
    """To+Cc+Bcc with duplicates (compared case-insensitively) removed, first one kept."""
    seen: dict[str, Address] = {}
    for kind, address in recipients:
        email = normalize_email(address)
        if email and email not in seen:
            seen[email] = Address(kind=kind, address=address.strip(), email=email)
    return list(seen.values())


def run_send_rules(ctx: SendContext) -> None:
    """Run rules 5-22 in order; the first failure raises its ApiError."""
    for rule in SEND_RULES:
        rule(ctx)

"""`securesend load FILE` (SPEC 5): groups, users, contacts and banned lists, idempotently.

Groups are matched by name and users by email; loading the same file twice changes
nothing. Numbers and features a group leaves out take those of the group named
`default` (or the model's defaults when there is none). A password is re-hashed only
when it no longer verifies, so a second load keeps the stored hash.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from worker.domain import webhooks
from worker.domain.attachments import parse_types
from worker.domain.auth import normalize_email
from worker.domain.secrets import Keys, hash_password, verify_password
from worker.models import BannedEntry, BannedKind, Contact, Group, User, UserState


class _Fixture(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class BannedLists(_Fixture):
    keywords: list[str] = Field(default_factory=list)
    regexes: list[str] = Field(default_factory=list)


class GroupFeatures(_Fixture):
    fyeo: bool | None = None
    confidential: bool | None = None
    message_expiry: bool | None = None
    invite_user: bool | None = None
    cra: bool | None = None
    send_to_contacts: bool | None = None
    recall: bool | None = None


class WebhookFixture(_Fixture):
    """An endpoint of the group (SPEC 8): its URL, the events it wants (a list, or "*"
    for all), and its `whsec_` secret. Loading another secret for the same URL rotates
    it: the previous one signs too for a day."""

    url: str
    events: list[str] | Literal["*"] = "*"
    secret: str = Field(repr=False)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return webhooks.check_url(url)

    @field_validator("events")
    @classmethod
    def _events(cls, events: list[str] | str) -> list[str]:
        return list(webhooks.parse_events(events))

    @field_validator("secret")
    @classmethod
    def _secret(cls, secret: str) -> str:
        return webhooks.check_secret(secret)


class GroupFixture(_Fixture):
    name: str = Field(min_length=1, max_length=100)
    daily_messages: int | None = Field(default=None, ge=0)
    daily_invites: int | None = Field(default=None, ge=0)
    max_recipients: int | None = Field(default=None, ge=1)
    max_expiry_days: int | None = Field(default=None, ge=0)
    # Attachments (SPEC 9): the largest file, all of one message's files, the extensions
    # allowed (with or without the dot; empty: any).
    max_attachment_bytes: int | None = Field(default=None, ge=0)
    max_message_bytes: int | None = Field(default=None, ge=0)
    attachment_types: list[str] | None = None
    features: GroupFeatures = Field(default_factory=GroupFeatures)
    banned: BannedLists | None = None
    # Its webhook endpoints; None leaves those it has alone (they are added, not replaced:
    # `securesend webhooks remove` removes one).
    webhooks: list[WebhookFixture] | None = None


class UserFixture(_Fixture):
    email: str = Field(min_length=3, max_length=254)
    password: str | None = None
    first_name: str = ""
    last_name: str = ""
    group: str = "default"
    state: Literal["active", "disabled", "pending"] = "active"
    locale: str = "en"
    contacts: list[str] = Field(default_factory=list)


class FixtureFile(_Fixture):
    banned: BannedLists | None = None
    groups: list[GroupFixture] = Field(default_factory=list)
    users: list[UserFixture] = Field(default_factory=list)


def read_fixture_file(path: Path) -> FixtureFile:
    """Parse a JSON or YAML fixture file; raises pydantic's ValidationError or a parse error."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    return FixtureFile.model_validate(data or {})


_NUMBERS = (
    "daily_messages",
    "daily_invites",
    "max_recipients",
    "max_expiry_days",
    "max_attachment_bytes",
    "max_message_bytes",
)
_FEATURES = tuple(GroupFeatures.model_fields)


def _apply_group(session: Session, fixture: GroupFixture, defaults: Group | None) -> Group:
    group = session.scalars(select(Group).where(Group.name == fixture.name)).one_or_none()
    if group is None:
        group = Group(name=fixture.name, banned_version=0)
        for column in Group.__table__.columns:
            if defaults is not None and column.name.startswith(
                ("daily_", "max_", "feature_", "attachment_")
            ):
                setattr(group, column.name, getattr(defaults, column.name))
        session.add(group)
    for number in _NUMBERS:
        value = getattr(fixture, number)
        if value is not None:
            setattr(group, number, value)
    if fixture.attachment_types is not None:
        group.attachment_types = ",".join(parse_types(",".join(fixture.attachment_types)))
    for feature in _FEATURES:
        value = getattr(fixture.features, feature)
        if value is not None:
            setattr(group, f"feature_{feature}", value)
    session.flush()
    if fixture.banned is not None:
        _replace_banned(session, group.id, fixture.banned)
    return group


def _replace_banned(session: Session, group_id: int | None, lists: BannedLists) -> None:
    wanted = {(BannedKind.KEYWORD, k) for k in lists.keywords} | {
        (BannedKind.REGEX, r) for r in lists.regexes
    }
    scope = BannedEntry.group_id.is_(None) if group_id is None else BannedEntry.group_id == group_id
    current = {
        (k, p)
        for k, p in session.execute(select(BannedEntry.kind, BannedEntry.pattern).where(scope))
    }
    if current == wanted:
        return
    session.execute(delete(BannedEntry).where(scope))
    session.add_all(
        BannedEntry(group_id=group_id, kind=kind, pattern=pattern) for kind, pattern in wanted
    )
    bump = update(Group).values(banned_version=Group.banned_version + 1)
    session.execute(bump if group_id is None else bump.where(Group.id == group_id))


def _apply_user(session: Session, fixture: UserFixture, groups: dict[str, Group]) -> None:
    email = normalize_email(fixture.email)
    group = (
        groups.get(fixture.group)
        or session.scalars(select(Group).where(Group.name == fixture.group)).one_or_none()
    )
    if group is None:
        raise ValueError(f"user {email}: unknown group {fixture.group!r}")
    user = session.scalars(select(User).where(User.email == email)).one_or_none()
    if user is None:
        user = User(email=email, failed_logins=0)
        session.add(user)
    user.group_id = group.id
    user.first_name = fixture.first_name
    user.last_name = fixture.last_name
    user.state = UserState(fixture.state)
    user.locale = fixture.locale
    if fixture.password is not None and not verify_password(user.password_hash, fixture.password):
        user.password_hash = hash_password(fixture.password)
    session.flush()
    wanted = {normalize_email(c) for c in fixture.contacts}
    current = set(session.scalars(select(Contact.email).where(Contact.owner_id == user.id)))
    if wanted != current:
        session.execute(delete(Contact).where(Contact.owner_id == user.id))
        session.add_all(Contact(owner_id=user.id, email=c) for c in sorted(wanted))


def load_fixtures(
    session: Session, fixtures: FixtureFile, *, keys: Keys, now: datetime
) -> dict[str, int]:
    """Create or update everything in `fixtures`; returns counts of what it touched.
    Webhook secrets are sealed with `keys`."""
    default = next((g for g in fixtures.groups if g.name == "default"), None)
    groups: dict[str, Group] = {}
    defaults = (
        _apply_group(session, default, None)
        if default is not None
        else (session.scalars(select(Group).where(Group.name == "default")).one_or_none())
    )
    if defaults is None:
        # There is always a default group: invitees join it and users without one do too.
        defaults = _apply_group(session, GroupFixture(name="default"), None)
    groups["default"] = defaults
    for fixture in fixtures.groups:
        if fixture.name != "default":
            groups[fixture.name] = _apply_group(session, fixture, defaults)
    for fixture in fixtures.groups:
        for hook in fixture.webhooks or ():
            webhooks.add_endpoint(
                session,
                group=fixture.name,
                url=hook.url,
                events=hook.events,
                secret=hook.secret,
                keys=keys,
                now=now,
            )
    if fixtures.banned is not None:
        _replace_banned(session, None, fixtures.banned)
    for user in fixtures.users:
        _apply_user(session, user, groups)
    return {"groups": len(fixtures.groups), "users": len(fixtures.users)}


def load_fixture_dict(
    session: Session, data: dict[str, Any], *, keys: Keys, now: datetime
) -> dict[str, int]:
    """`load_fixtures` for data already parsed (tests, the benchmark)."""
    return load_fixtures(session, FixtureFile.model_validate(data), keys=keys, now=now)

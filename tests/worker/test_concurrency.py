"""Concurrent sends through live workers: quotas are never exceeded and a draft is sent
once, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from tests.factories import World
from tests.support import Stack
from worker.models import DailyUsage, Delivery, Message, MessageStatus, OutboxEmail, User


def _send_all(world: World, guids: list[str], **body: object) -> list[tuple[int, str | None]]:
    def send(guid: str) -> tuple[int, str | None]:
        response = world.send(guid, **body)
        status = response.json().get("responseStatus")
        return response.status_code, status["errorCode"] if status else None

    with ThreadPoolExecutor(max_workers=len(guids)) as pool:
        return list(pool.map(send, guids))


def _usage(stack: Stack, email: str) -> tuple[int, int]:
    with stack.database.read_session() as session:
        user_id = session.scalars(select(User.id).where(User.email == email)).one()
        usage = session.scalars(select(DailyUsage).where(DailyUsage.user_id == user_id)).one()
        return usage.messages_sent, usage.invites_sent


def test_concurrent_sends_never_pass_the_daily_limit(stack: Stack, unique: str) -> None:
    world = World(stack, unique, limits={"dailyMessages": 4}).setup()
    reader = world.user("r")
    guids = [world.draft(to=[reader]) for _ in range(12)]

    results = Counter(_send_all(world, guids))

    assert results == Counter({(200, None): 4, (403, "28"): 8})
    assert _usage(stack, world.sender) == (4, 0)
    with stack.database.read_session() as session:
        sent = session.scalar(
            select(func.count()).where(
                Message.guid.in_(guids), Message.status == MessageStatus.SENT
            )
        )
    assert sent == 4


def test_concurrent_invites_never_pass_the_invite_limit(stack: Stack, unique: str) -> None:
    world = World(stack, unique, limits={"dailyInvites": 3}).setup()
    guids = [world.draft(to=[f"new{i}-{unique}@example.org"]) for i in range(8)]

    results = Counter(_send_all(world, guids, inviteNewUsers=True))

    assert results == Counter({(200, None): 3, (403, "30"): 5})
    assert _usage(stack, world.sender) == (3, 3)


def test_twenty_concurrent_sends_of_one_draft_send_once(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    guid = world.draft(to=[world.user("a"), world.user("b")])

    def send(_: int) -> tuple[int, bytes]:
        response = world.send(guid)
        return response.status_code, response.content

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(send, range(20)))

    assert {status for status, _ in answers} == {200}
    assert len({content for _, content in answers}) == 1  # identical answers
    assert _usage(stack, world.sender) == (1, 0)
    with stack.database.read_session() as session:
        message_id = session.scalars(select(Message.id).where(Message.guid == guid)).one()
        deliveries = session.scalar(select(func.count()).where(Delivery.message_id == message_id))
        emails = session.scalar(select(func.count()).where(OutboxEmail.message_id == message_id))
    assert (deliveries, emails) == (2, 2)

"""The number of SQL statements a send runs does not grow with its recipients."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, select

from tests.factories import World
from tests.support import Stack
from worker.domain import clock
from worker.domain.send import SendRequest, send_message
from worker.models import User, new_guid


@contextmanager
def counting(stack: Stack) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(stack.database.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(stack.database.engine, "before_cursor_execute", count)


def _statements_for(world: World, to: list[str], **flags: Any) -> list[str]:
    guid = world.draft(to=to)
    with world.stack.database.read_session() as session:
        sender_guid = session.scalars(select(User.guid).where(User.email == world.sender)).one()
    request = SendRequest(job_id=new_guid(), sender_guid=sender_guid, message_guid=guid, **flags)
    with counting(world.stack) as statements:
        with world.stack.database.write_session() as session:
            outcome = send_message(
                session,
                request=request,
                now=clock.now(),
                settings=world.stack.settings,
                keys=world.stack.keys,
            )
    assert outcome.http_status == 200, outcome.body
    return statements


def test_statements_per_send_do_not_grow_with_recipients(stack: Stack, unique: str) -> None:
    world = World(stack, unique, limits={"maxRecipients": 100}).setup()
    stack.load(
        {
            "users": [
                {"email": f"r{i}-{unique}@example.com", "group": world.group} for i in range(40)
            ]
        }
    )
    readers = [f"r{i}-{unique}@example.com" for i in range(40)]

    _statements_for(world, readers[:1])  # warm: the group's banned matcher gets built once
    one = _statements_for(world, readers[:1])
    many = _statements_for(world, readers)

    assert len(many) == len(one), "\n".join(s[:90] for s in [*one, "-----", *many])


def test_statements_per_send_do_not_grow_with_invitations(stack: Stack, unique: str) -> None:
    world = World(stack, unique, limits={"maxRecipients": 100, "dailyInvites": 100}).setup()

    _statements_for(world, [f"w-{unique}@example.org"], invite_new_users=True)  # warm
    one = _statements_for(world, [f"a0-{unique}@example.org"], invite_new_users=True)
    many = _statements_for(
        world, [f"b{i}-{unique}@example.org" for i in range(30)], invite_new_users=True
    )

    assert len(many) == len(one), "\n".join(s[:90] for s in [*one, "-----", *many])


def test_a_group_without_webhook_endpoints_runs_no_statement_for_them(
    stack: Stack, unique: str
) -> None:
    """SPEC 8: a group without endpoints costs a send nothing; one with endpoints, one
    read of them (their events join the send's own writes)."""
    world = World(stack, unique).setup()
    reader = world.user("reader")
    _statements_for(world, [reader])  # warm
    without = _statements_for(world, [reader])
    world.hook("https://hooks.example.org/securesend")
    hooked = _statements_for(world, [reader])

    assert not any("webhook_endpoints" in s for s in without), without
    assert len(hooked) == len(without) + 1, "\n".join(s[:90] for s in [*without, "--", *hooked])

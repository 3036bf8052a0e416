"""The suppression list (SPEC 8): a send to a suppressed address delivers the secure
message and queues no email there; its delivery record says why; operators list, add and
remove entries with `securesend suppressions`, and a removal is recorded."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from tests.factories import World
from tests.support import Stack, run_cli
from worker.db import Database
from worker.domain import clock, suppressions
from worker.models import Suppression
from worker.settings import Settings


def _suppress(stack: Stack, address: str, reason: str) -> None:
    with stack.database.write_session() as session:
        suppressions.suppress(session, address, source="manual", reason=reason, now=clock.now())


def test_a_suppressed_address_gets_the_message_and_no_email(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    quiet_email, quiet_password = stack.make_user(unique, name="quiet", group=world.group)
    loud = world.user("loud")
    _suppress(stack, quiet_email.upper(), "asked not to be emailed")

    guid = world.draft(to=[quiet_email, loud])
    sent = world.send(guid)
    assert sent.status_code == 200 and sent.json()["notificationSent"] is True, sent.text
    records = world.delivery_records(guid)
    assert records[quiet_email]["status"] == "suppressed"
    assert records[quiet_email]["reason"] == "suppressed (manual): asked not to be emailed"
    assert records[loud]["status"] in ("queued", "sent")

    alone = world.draft(to=[quiet_email])
    answer = world.send(alone)
    assert answer.status_code == 200 and answer.json()["notificationSent"] is False
    with stack.client() as client:  # the secure message itself is there to read
        read = client.get(
            f"/api/v1/messages/{alone}",
            headers={"x-sm-session-token": stack.login(quiet_email, quiet_password)},
        )
    assert read.status_code == 200, read.text


def test_an_invitation_to_a_suppressed_address_is_not_sent(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    invitee = f"invitee-{unique}@example.org"
    _suppress(stack, invitee, "bounced")
    guid = world.draft(to=[invitee])
    answer = world.send(guid, inviteNewUsers=True)
    assert answer.status_code == 200 and answer.json()["notificationSent"] is False, answer.text
    records = stack.deliveries(world.token, guid).json()["results"]  # every email, each kind
    assert records and {r["status"] for r in records} == {"suppressed"}


def test_operators_list_add_and_remove_and_a_removal_is_recorded(tmp_path: Path) -> None:
    env = {**os.environ, "VAR_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    assert run_cli("migrate", env=env).returncode == 0

    added = run_cli("suppressions", "add", "Bob@Example.com", "--reason", "complained", env=env)
    assert added.returncode == 0, added.stderr
    listed = run_cli("suppressions", "list", env=env)
    assert "bob@example.com  manual" in listed.stdout and "complained" in listed.stdout
    removed = run_cli("suppressions", "remove", "bob@example.com", "--by", "ops ticket 7", env=env)
    assert removed.returncode == 0 and "removed 1" in removed.stdout
    assert "0 suppressed" in run_cli("suppressions", "list", env=env).stdout
    assert run_cli("suppressions", "remove", "bob@example.com", env=env).returncode == 1
    assert run_cli("suppressions", "add", env=env).returncode == 2

    database = Database(Settings(var_dir=tmp_path).effective_database_url, pool_size=1)
    try:
        with database.read_session() as session:
            (row,) = session.scalars(select(Suppression)).all()
        assert row.removed_by == "ops ticket 7" and row.removed_at is not None
    finally:
        database.dispose()

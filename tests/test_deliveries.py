"""What became of each email (SPEC 8): GET /messages/{guid}/deliveries, for the sender only."""

from __future__ import annotations

from typing import Any

from tests.factories import World
from tests.support import Stack, assert_error


def test_the_sender_reads_one_record_per_email_until_each_is_sent(
    stack: Stack, unique: str, wait_until: Any
) -> None:
    world = World(stack, unique).setup()
    reader = world.user("reader")
    invitee = f"invitee-{unique}@example.org"
    guid = world.draft(to=[reader], cc=[invitee])
    assert stack.deliveries(world.token, guid).json() == {"results": []}  # a draft
    assert world.send(guid, inviteNewUsers=True).status_code == 200

    def delivered() -> list[dict[str, Any]] | None:
        results: list[dict[str, Any]] = stack.deliveries(world.token, guid).json()["results"]
        return results if all(r["status"] == "sent" for r in results) else None

    results = wait_until(delivered, timeout=30)
    assert results, stack.deliveries(world.token, guid).text
    by_email = {r["email"]: r for r in results}
    assert by_email[reader]["kind"] == "Notification"
    assert "Invitation" in {r["kind"] for r in results if r["email"] == invitee}
    for record in results:
        assert record["reason"] is None and record["attempts"] == 1
        assert record["queuedAt"] <= record["sentAt"] <= record["updatedAt"]


def test_nobody_but_the_sender_reads_them(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    email, password = stack.make_user(unique, name="reader", group=world.group)
    guid = world.sent_message([email])
    stranger, stranger_password = stack.make_user(unique, name="stranger")
    for token in (stack.login(email, password), stack.login(stranger, stranger_password)):
        assert_error(stack.deliveries(token, guid), 404, "929", "Message not found")
    assert_error(stack.deliveries(world.token, "0" * 32), 404, "929", "Message not found")

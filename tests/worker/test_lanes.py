"""Lanes (docs/design.md, "Lanes"): the order a worker takes its queues in, the share the
bulk lane keeps, and the outbox's claim order. The live behaviour is tests/test_lanes.py."""

from __future__ import annotations

from datetime import timedelta
from queue import Empty

from sqlalchemy import select

from tests.worker import rows
from worker.db import Database
from worker.domain import clock, delivery
from worker.lanes import BULK_EVERY, LaneCycle, LaneFairCycle, LaneOrder
from worker.models import EmailStatus, Lane, OutboxEmail
from worker.queues import ALL_QUEUES, INTERACTIVE_SEND_QUEUE, MAIL_QUEUE, SEND_QUEUE


def _deliveries(order: LaneOrder, waiting: dict[str, int], count: int) -> list[str]:
    """What a consumer takes, `count` times, from queues holding `waiting` messages: the
    first queue in `order`'s order that holds one (what BRPOP does)."""
    taken = []
    for _ in range(count):
        queue = next((q for q in order.order(waiting) if waiting[q]), None)
        if queue is None:
            break
        waiting[queue] -= 1
        order.delivered(queue)
        taken.append(queue)
    return taken


def test_a_drain_goes_first_then_interactive_sends_then_bulk() -> None:
    assert LaneOrder().order([SEND_QUEUE, MAIL_QUEUE, INTERACTIVE_SEND_QUEUE]) == [
        MAIL_QUEUE,
        INTERACTIVE_SEND_QUEUE,
        SEND_QUEUE,
    ]
    assert list(ALL_QUEUES) == [MAIL_QUEUE, INTERACTIVE_SEND_QUEUE, SEND_QUEUE]
    # A queue of an operator's own goes between the interactive and the bulk queue.
    assert LaneOrder().order([SEND_QUEUE, "reports", INTERACTIVE_SEND_QUEUE]) == [
        INTERACTIVE_SEND_QUEUE,
        "reports",
        SEND_QUEUE,
    ]
    taken = _deliveries(LaneOrder(), {INTERACTIVE_SEND_QUEUE: 2, SEND_QUEUE: 5}, 3)
    assert taken == [INTERACTIVE_SEND_QUEUE, INTERACTIVE_SEND_QUEUE, SEND_QUEUE]


def test_a_flood_of_interactive_sends_leaves_the_bulk_lane_one_start_in_four() -> None:
    waiting = {INTERACTIVE_SEND_QUEUE: 10_000, MAIL_QUEUE: 0, SEND_QUEUE: 10_000}
    taken = _deliveries(LaneOrder(), waiting, 4000)
    assert taken.count(SEND_QUEUE) == 4000 // BULK_EVERY
    # Never more than BULK_EVERY - 1 interactive starts in a row while bulk waits.
    run = longest = 0
    for queue in taken:
        run = run + 1 if queue != SEND_QUEUE else 0
        longest = max(longest, run)
    assert longest == BULK_EVERY - 1


def test_with_nothing_interactive_bulk_takes_every_start() -> None:
    waiting = {INTERACTIVE_SEND_QUEUE: 0, MAIL_QUEUE: 0, SEND_QUEUE: 100}
    assert _deliveries(LaneOrder(), waiting, 100) == [SEND_QUEUE] * 100


def test_the_redis_cycle_orders_each_brpop_by_lane() -> None:
    cycle = LaneCycle()
    cycle.update([SEND_QUEUE, MAIL_QUEUE, INTERACTIVE_SEND_QUEUE])  # type: ignore[no-untyped-call]
    assert cycle.consume(3) == list(ALL_QUEUES)
    for _ in range(BULK_EVERY - 1):
        cycle.rotate(INTERACTIVE_SEND_QUEUE)
    assert cycle.consume(3)[0] == SEND_QUEUE  # bulk's turn
    cycle.rotate(SEND_QUEUE)
    assert cycle.consume(3) == list(ALL_QUEUES)


def test_the_embedded_brokers_cycle_takes_interactive_first() -> None:
    messages = {SEND_QUEUE: ["b1", "b2"], INTERACTIVE_SEND_QUEUE: ["i1"], MAIL_QUEUE: ["d1"]}
    delivered: list[str] = []

    def get_and_deliver(queue: str, callback: object) -> None:
        if not messages[queue]:
            raise Empty()
        delivered.append(messages[queue].pop(0))

    cycle = LaneFairCycle(get_and_deliver, [SEND_QUEUE, MAIL_QUEUE, INTERACTIVE_SEND_QUEUE], Empty)

    def callback(*_: object) -> None:
        return None

    for _ in range(4):
        cycle.get(callback)
    assert delivered == ["d1", "i1", "b1", "b2"]
    try:
        cycle.get(callback)
    except Empty:
        pass
    else:
        raise AssertionError("an empty set of queues must raise Empty")


def test_an_interactive_email_is_claimed_before_a_batch_of_older_bulk_ones(
    own_database: Database,
) -> None:
    earlier, now = clock.now() - timedelta(seconds=60), clock.now()
    with own_database.write_session() as session:
        bulk = [rows.email(earlier, EmailStatus.QUEUED, attempts=0) for _ in range(60)]
        interactive = rows.email(now, EmailStatus.QUEUED, attempts=0)
        interactive.lane = Lane.INTERACTIVE
        for email in [*bulk, interactive]:
            email.next_attempt_at = email.created_at
        session.add_all([*bulk, interactive])
        session.flush()
        interactive_id, bulk_ids = interactive.id, [email.id for email in bulk]

    def claim() -> list[int]:
        return own_database.run_alone(
            lambda connection: [
                row.id
                for row in delivery.claim(
                    connection,
                    now=now,
                    max_attempts=3,
                    lease=timedelta(minutes=1),
                    claimed_by="worker-1",
                )
            ]
        )

    first = claim()
    # The newest email, but the interactive lane's: first of the first batch.
    assert first[0] == interactive_id
    assert first[1:] == bulk_ids[: delivery.DRAIN_BATCH - 1]
    # Then the bulk ones, oldest first.
    assert claim() == bulk_ids[delivery.DRAIN_BATCH - 1 :]
    with own_database.read_session() as session:
        found = session.execute(select(OutboxEmail.id, OutboxEmail.lane))
        lanes = {row.id: row.lane for row in found}
    assert lanes[interactive_id] == Lane.INTERACTIVE and lanes[bulk_ids[0]] == Lane.BULK

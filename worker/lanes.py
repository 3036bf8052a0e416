"""Which queue a worker takes its next message from: a drain of the outbox, then
interactive sends, then bulk sends, which are never starved (docs/design.md, "Lanes").

A worker consumes its queues through kombu, which asks a *cycle* for the order in which to
try them: on Redis one BRPOP lists the queues' keys in that order and pops from the first
that holds a message; on the embedded broker each queue is tried in turn. kombu's own
cycles rotate the queue that delivered to the back (`round_robin`) or keep the order the
queues happen to be in (`priority`), so a send someone waits for could sit behind a
backlog. `LaneOrder` gives every try the same order — the mail queue, then the interactive
send queue, then the bulk send queue (`RANK`) — except that after `BULK_EVERY - 1`
deliveries in a row from the queues ahead of it, the bulk queue is tried first once: while
the bulk queue holds messages it gets at least one delivery in `BULK_EVERY`, however many
interactive sends arrive. Its class names are given to kombu by path
(`queue_order_strategy` in the Redis transport options; the embedded broker's channel
builds `LaneFairCycle`).

Mail goes first because the mail queue holds little: one drain that sends asked for at
most (worker.drains keeps one pending or running), the sweeps, and a drain after a retry's
backoff; and every email, interactive ones included, waits for a drain: behind the
interactive queue, a drain waited until the sends stopped coming, and people's emails with
it (the benchmark's email rate fell by a fifth). A drain takes one pool process while it
runs; the others go on with sends.

With `task_acks_late` and a prefetch multiplier of 1, a worker holds no message beyond one
per pool process, each of them running (worker/celery_factory.py): an interactive send
that arrives while every process runs a bulk send waits for the first of those to finish,
and is the next message that worker takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kombu.utils.scheduling import FairCycle, round_robin_cycle

from worker.queues import INTERACTIVE_SEND_QUEUE, MAIL_QUEUE, SEND_QUEUE

# The order in which a worker tries its queues; a queue not named here (one of an
# operator's own) goes between the interactive and the bulk queue.
RANK = {MAIL_QUEUE: 0, INTERACTIVE_SEND_QUEUE: 1, SEND_QUEUE: 3}
OTHER_RANK = 2
BULK_QUEUE = SEND_QUEUE
# While bulk sends wait, at least one delivery in this many goes to them: the interactive
# lane takes at most 3/4 of a worker's task starts (tests/test_lanes.py shows it).
BULK_EVERY = 4

# What kombu's Redis transport is told to build (`queue_order_strategy`).
REDIS_CYCLE = f"{__name__}:LaneCycle"


class LaneOrder:
    """The order to try queues in, given what was delivered so far (one per consumer)."""

    def __init__(self) -> None:
        self.since_bulk = 0  # deliveries since the bulk queue last delivered

    def order(self, queues: Iterable[str]) -> list[str]:
        ranked = sorted(queues, key=lambda queue: RANK.get(queue, OTHER_RANK))
        if self.since_bulk >= BULK_EVERY - 1 and BULK_QUEUE in ranked:
            ranked.remove(BULK_QUEUE)
            ranked.insert(0, BULK_QUEUE)
        return ranked

    def delivered(self, queue: str) -> None:
        self.since_bulk = 0 if queue == BULK_QUEUE else self.since_bulk + 1


class LaneCycle(round_robin_cycle):
    """kombu's cycle protocol (Redis transport): `consume` is the order of one BRPOP's
    keys, `rotate` is told which queue delivered."""

    def __init__(self, it: list[str] | None = None) -> None:
        super().__init__(it)  # type: ignore[no-untyped-call]
        self.lanes = LaneOrder()

    def consume(self, n: int) -> list[str]:
        return self.lanes.order(self.items[:n])

    def rotate(self, last_used: str) -> str:
        self.lanes.delivered(last_used)
        return last_used


class LaneFairCycle(FairCycle):
    """The same order for kombu's virtual transports (the embedded broker): `get` tries
    each queue in `LaneOrder`'s order and delivers from the first that has a message."""

    def __init__(
        self, fun: Callable[..., Any], resources: Sequence[str], predicate: type[Exception]
    ) -> None:
        super().__init__(fun, resources, predicate)  # type: ignore[no-untyped-call]
        self.lanes = LaneOrder()

    def get(self, callback: Callable[..., Any], **kwargs: Any) -> Any:
        for queue in self.lanes.order(self.resources):
            try:
                delivered = self.fun(queue, callback, **kwargs)
            except self.predicate:
                continue
            self.lanes.delivered(queue)
            return delivered
        raise self.predicate()

"""Email delivery as the workers run it: asking for a drain of the outbox, running one
(worker.domain.delivery claims, sends and records), and the flag that keeps one drain
pending or running at a time.

Sends arrive faster than emails need a task each: with the flag, a burst of sends costs
one drain that delivers everything due in batches over one connection. The flag names
the worker that holds it (the one that asked, then the one that runs the drain), so that
the lifeline releases it when that worker dies; it also expires on its own. Without
Redis (the embedded broker) every request publishes a drain. A drain asked for later (a
retry's backoff) does not take the flag: it must not hold back the drains new sends ask
for, and two drains at once claim different emails.
"""

from __future__ import annotations

import logging

import redis

from worker.domain import clock, delivery
from worker.identity import worker_id
from worker.queues import DRAIN_TASK, MAIL_QUEUE
from worker.runtime import Runtime

logger = logging.getLogger(__name__)

DRAIN_FLAG = "securesend:mail:drain-pending"
# When the next countdown drain is scheduled (Redis's clock, seconds): a later request
# for then or after needs no drain of its own.
DRAIN_AT = "securesend:mail:drain-at"
_BOOK_COUNTDOWN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = now + tonumber(ARGV[1])
local booked = tonumber(redis.call('get', KEYS[1]))
if booked and booked > now and booked <= due then return 0 end
redis.call('set', KEYS[1], tostring(due), 'PX', math.floor((due - now) * 1000) + 1000)
return 1
"""
# Delete the flag only if it still names the worker (a newer drain may hold it).
_RELEASE_IF_HELD_BY = "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end"


def _flag_ttl(runtime: Runtime) -> int:
    return int(runtime.settings.mail_task_time_limit_seconds * 1.5)


def _holder() -> str:
    return worker_id() or "-"


def request_drain(runtime: Runtime, *, countdown: float | None = None) -> None:
    """Make sure a drain is on its way: now (after the batch window), unless one is
    pending or running already; or after `countdown` seconds, unless one is already
    asked for by then."""
    if countdown is None:
        if not _take_flag(runtime):
            return
        countdown = runtime.settings.mail_batch_window_seconds or None
    elif not _book_countdown(runtime, countdown):
        return
    try:
        runtime.celery.send_task(DRAIN_TASK, queue=MAIL_QUEUE, countdown=countdown)
    except Exception:  # noqa: BLE001 - the outbox row is the record; the sweep asks again
        release(runtime)
        logger.warning("could not queue an outbox drain; the sweep will")


def _book_countdown(runtime: Runtime, countdown: float) -> bool:
    """Whether a drain must be scheduled `countdown` seconds from now: not when one is
    already scheduled by then (every drain asks for the next: without this, each would
    start a chain of its own, and paced drains would pile up sharing the same slots)."""
    if runtime.redis is None:
        return True
    try:
        return bool(runtime.redis.eval(_BOOK_COUNTDOWN, 1, DRAIN_AT, countdown))
    except redis.RedisError:
        return True


def _take_flag(runtime: Runtime) -> bool:
    if runtime.redis is None:
        return True
    try:
        return bool(runtime.redis.set(DRAIN_FLAG, _holder(), nx=True, ex=_flag_ttl(runtime)))
    except redis.RedisError:
        return True


def hold(runtime: Runtime) -> None:
    """The drain that starts takes the flag over in its worker's name."""
    if runtime.redis is not None:
        try:
            runtime.redis.set(DRAIN_FLAG, _holder(), xx=True, ex=_flag_ttl(runtime))
        except redis.RedisError:
            pass


def release(runtime: Runtime) -> None:
    if runtime.redis is not None:
        try:
            runtime.redis.delete(DRAIN_FLAG)
        except redis.RedisError:
            pass  # it expires by itself


def release_if_held_by(runtime: Runtime, worker_ids: list[str]) -> None:
    """Release the flag if a worker of `worker_ids` (dead ones) holds it."""
    if runtime.redis is not None:
        for dead in worker_ids:
            runtime.redis.eval(_RELEASE_IF_HELD_BY, 1, DRAIN_FLAG, dead)


def run_drain(runtime: Runtime) -> delivery.DeliveryReport:
    """Deliver whatever is due, in batches, for up to half the mail task's time limit;
    then ask for the next drain (`sweep`): now if emails became due while this one held
    the flag (their sends asked for no drain of their own), else when the earliest retry
    or deferred email is due."""
    settings = runtime.settings
    hold(runtime)
    try:
        report = delivery.drain(
            runtime.database,
            delivery.Delivery(runtime.relays(), runtime.pacing()),
            keys=runtime.keys,
            settings=settings,
            now=clock.now,
            budget_seconds=settings.mail_task_time_limit_seconds / 2,
            claimed_by=worker_id(),
        )
    finally:
        release(runtime)
    sweep(runtime)
    return report


def sweep(runtime: Runtime) -> bool:
    """Ask for the next drain: now if an email is due that nobody holds (after a lost
    task, a failed publish, a crashed mail worker), else when the earliest pending email
    is due (a retry's backoff, a deferral for the pace: every drain leaves the next one
    asked for, not only for the emails it deferred itself). Safe anywhere, any number of
    times; returns whether an email is due now."""
    wait = runtime.database.run(
        lambda session: delivery.next_due_in(session, now=clock.now()), write=False
    )
    if wait == 0.0:
        request_drain(runtime)
    # A countdown task waits unacknowledged in a worker; past the visibility timeout
    # Redis would hand it to a second worker. Longer waits are left to the next sweep.
    elif wait is not None and wait < runtime.settings.broker_visibility_timeout_seconds / 2:
        request_drain(runtime, countdown=wait)
    return wait == 0.0

"""Outbox delivery as the workers run it: asking for a drain of the outbox, running one
(worker.domain.delivery claims, sends and records), and the flag that keeps one drain
pending or running at a time. Each channel of the outbox (emails, webhook events) has a
drain task and a flag of its own, so that a slow webhook endpoint never holds back an
email; the mechanism is the same.

Sends arrive faster than emails need a task each: with the flag, a burst of sends costs
one drain that delivers everything due in batches over one connection. The flag names
the worker that holds it (the one that asked, then the one that runs the drain), so that
the lifeline releases it when that worker dies; it also expires on its own (15 s,
renewed by its drain before each batch). Without
Redis (the embedded broker) every request publishes a drain. A drain asked for later (a
retry's backoff) does not take the flag: it must not hold back the drains new sends ask
for, and two drains at once claim different emails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import redis
from sqlalchemy.orm import Session

from worker.domain import clock, delivery
from worker.identity import worker_id
from worker.models import Channel
from worker.queues import DRAIN_TASK, MAIL_QUEUE, WEBHOOK_DRAIN_TASK
from worker.runtime import Runtime

logger = logging.getLogger(__name__)

DRAIN_FLAG = "securesend:mail:drain-pending"
# When the next countdown drain is scheduled (Redis's clock, seconds): a later request
# for then or after needs no drain of its own.
DRAIN_AT = "securesend:mail:drain-at"


@dataclass(frozen=True, slots=True)
class _Drain:
    """One channel's drain: its task and its two Redis keys."""

    task: str
    flag: str
    at: str


DRAINS = {
    Channel.EMAIL: _Drain(DRAIN_TASK, DRAIN_FLAG, DRAIN_AT),
    Channel.WEBHOOK: _Drain(
        WEBHOOK_DRAIN_TASK, "securesend:webhooks:drain-pending", "securesend:webhooks:drain-at"
    ),
}
_BOOK_COUNTDOWN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = now + tonumber(ARGV[1])
local booked = tonumber(redis.call('get', KEYS[1]))
if booked and booked > now and booked <= due then return 0 end
redis.call('set', KEYS[1], tostring(due), 'PX', math.floor((due - now) * 1000) + 1000)
return 1
"""
# The flag's value: `<worker> asked <t>` when a drain was asked for, `<worker> running
# <t>` once one started (t: Redis's clock, seconds).
_TAKE = """
local t = redis.call('TIME')
if redis.call('set', KEYS[1], ARGV[1] .. ' asked ' .. t[1], 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""
_HOLD = """
local t = redis.call('TIME')
redis.call('set', KEYS[1], ARGV[1] .. ' running ' .. t[1], 'XX', 'EX', ARGV[2])
return 1
"""
# Delete the flag only if it still names the worker (a newer drain may hold it).
_RELEASE_IF_HELD_BY = """
local v = redis.call('get', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ' ' then
  redis.call('del', KEYS[1])
end
"""
# Delete a flag asked for more than ARGV[1] seconds ago whose drain never started: its
# message was lost (a Redis failover or restart after the flag was written).
_CLEAR_IF_LOST = """
local v = redis.call('get', KEYS[1])
if not v then return 0 end
local state, at = string.match(v, ' (%a+) (%d+)$')
local t = redis.call('TIME')
if state == 'asked' and tonumber(t[1]) - tonumber(at) > tonumber(ARGV[1]) then
  redis.call('del', KEYS[1])
  return 1
end
return 0
"""
# A drain asked for this long ago that has not started is taken for lost.
DRAIN_LOST_AFTER_SECONDS = 10


# The flag lives this long unless its drain renews it (before each batch): a drain that
# died, or whose release was lost with Redis (a failover), holds back the next one for
# this long at most. A batch that takes longer lets a second drain start meanwhile,
# which is harmless: two drains claim different rows.
DRAIN_FLAG_TTL_SECONDS = 15


def _holder() -> str:
    return worker_id() or "-"


def request_drain(
    runtime: Runtime, *, countdown: float | None = None, channel: Channel = Channel.EMAIL
) -> None:
    """Make sure a drain of `channel` is on its way: now (after the batch window), unless
    one is pending or running already; or after `countdown` seconds, unless one is
    already asked for by then."""
    drain = DRAINS[channel]
    if countdown is None:
        if not _take_flag(runtime, drain):
            return
        countdown = runtime.settings.mail_batch_window_seconds or None
    elif not _book_countdown(runtime, countdown, drain):
        return
    try:
        runtime.celery.send_task(drain.task, queue=MAIL_QUEUE, countdown=countdown)
    except Exception:  # noqa: BLE001 - the outbox row is the record; the sweep asks again
        release(runtime, channel)
        logger.warning("could not queue an outbox drain; the sweep will")


def _book_countdown(runtime: Runtime, countdown: float, drain: _Drain) -> bool:
    """Whether a drain must be scheduled `countdown` seconds from now: not when one is
    already scheduled by then (every drain asks for the next: without this, each would
    start a chain of its own, and paced drains would pile up sharing the same slots)."""
    if runtime.redis is None:
        return True
    try:
        return bool(runtime.redis.eval(_BOOK_COUNTDOWN, 1, drain.at, countdown))
    except redis.RedisError:
        return True


def _take_flag(runtime: Runtime, drain: _Drain) -> bool:
    if runtime.redis is None:
        return True
    try:
        return bool(runtime.redis.eval(_TAKE, 1, drain.flag, _holder(), DRAIN_FLAG_TTL_SECONDS))
    except redis.RedisError:
        return True


def hold(runtime: Runtime, channel: Channel = Channel.EMAIL) -> None:
    """The drain that starts takes the flag over in its worker's name."""
    if runtime.redis is not None:
        try:
            runtime.redis.eval(_HOLD, 1, DRAINS[channel].flag, _holder(), DRAIN_FLAG_TTL_SECONDS)
        except redis.RedisError:
            pass


def release(runtime: Runtime, channel: Channel = Channel.EMAIL) -> None:
    if runtime.redis is not None:
        try:
            runtime.redis.delete(DRAINS[channel].flag)
        except redis.RedisError:
            pass  # it expires by itself


def release_if_held_by(runtime: Runtime, worker_ids: list[str]) -> None:
    """Release every channel's flag that a worker of `worker_ids` (dead ones) holds."""
    if runtime.redis is not None:
        for dead in worker_ids:
            for drain in DRAINS.values():
                runtime.redis.eval(_RELEASE_IF_HELD_BY, 1, drain.flag, dead)


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
            between_batches=lambda: hold(runtime),
        )
    finally:
        release(runtime)
    _log_report("emails", report)
    if report.events:  # the outcomes' webhook events
        request_drain(runtime, channel=Channel.WEBHOOK)
    sweep(runtime, Channel.EMAIL)
    return report


def run_webhook_drain(runtime: Runtime) -> delivery.DeliveryReport:
    """Deliver the due webhook events, in batches, for up to half the mail task's time
    limit; then ask for the next drain as `run_drain` does."""
    settings = runtime.settings
    hold(runtime, Channel.WEBHOOK)
    try:
        report = delivery.drain_webhooks(
            runtime.database,
            runtime.webhooks(),
            keys=runtime.keys,
            now=clock.now,
            budget_seconds=settings.mail_task_time_limit_seconds / 2,
            lease=delivery.claim_lease(settings),
            claimed_by=worker_id(),
            between_batches=lambda: hold(runtime, Channel.WEBHOOK),
        )
    finally:
        release(runtime, Channel.WEBHOOK)
    _log_report("webhook events", report)
    sweep(runtime, Channel.WEBHOOK)
    return report


def _log_report(what: str, report: delivery.DeliveryReport) -> None:
    """One line per drain that did anything (each email's trouble has a line of its own)."""
    if report.sent or report.failed or report.retry_in or report.deferred:
        logger.info(
            "drain of %s: %d sent, %d failed, %d to retry, %d deferred",
            what,
            len(report.sent),
            len(report.failed),
            len(report.retry_in),
            len(report.deferred),
        )


def _clear_if_lost(runtime: Runtime, drain: _Drain) -> None:
    """Rows are due: if the flag says a drain was asked for long ago and never started,
    its message was lost with Redis (a failover, a restart), and the flag must not hold
    back the next drain until it expires."""
    if runtime.redis is None:
        return
    try:
        if runtime.redis.eval(_CLEAR_IF_LOST, 1, drain.flag, DRAIN_LOST_AFTER_SECONDS):
            logger.warning("the drain asked for as %s never started: asking again", drain.flag)
    except redis.RedisError:
        pass


def _next_due_in(session: Session, *, channel: Channel) -> float | None:
    return delivery.next_due_in(session, now=clock.now(), channel=channel)


def sweep(runtime: Runtime, *channels: Channel) -> bool:
    """Ask for each channel's next drain (every channel unless named): now if a row is
    due that nobody holds (after a lost task, a failed publish, a crashed worker), else
    when the earliest pending one is due (a retry's backoff, a deferral for the pace:
    every drain leaves the next one asked for, not only for the rows it deferred
    itself). Safe anywhere, any number of times; returns whether a row is due now."""
    due_now = False
    for channel in channels or tuple(Channel):
        wait = runtime.database.run(partial(_next_due_in, channel=channel), write=False)
        if wait == 0.0:
            _clear_if_lost(runtime, DRAINS[channel])
            request_drain(runtime, channel=channel)
            due_now = True
        # A countdown task waits unacknowledged in a worker; past the visibility timeout
        # Redis would hand it to a second worker. Longer waits are left to the next sweep.
        elif wait is not None and wait < runtime.settings.broker_visibility_timeout_seconds / 2:
            request_drain(runtime, countdown=wait, channel=channel)
    return due_now

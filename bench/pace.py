"""The benchmark's pace phase (issue 25): delivering at a throttling relay's pace.

The relay is a `ThrottlingSink` (tests/smtp_sink.py) that accepts at most R emails in any
sliding second (R = `RELAY_RATE`, 25, or `--relay-rate`) and answers `454 4.7.0
Throttling failure` beyond, as Amazon SES does. Against it, `PACE_SENDS` SendMessages
(750; 250 with --quick) with their notification email, `PACE_CONCURRENCY` (16) at a time
over HTTP, in four configurations, each on a stack and relay of its own (a fresh
database, Redis database 11 flushed, so no pace is remembered from the one before):

- one worker (`--concurrency 2`) with `MAIL_RATE_LIMIT` = R, the operator's limit: the
  workers must space the emails themselves, and the relay should hardly ever refuse one;
- one worker without a limit: the workers learn the pace from the relay's refusals
  (halved on a throttle reply, grown back while emails are accepted);
- the same two with two workers (`Stack.start(..., workers=2)`), which share the pace
  through Redis.

For each, from the first request until every email (one per send answered 200) arrived:

- the seconds taken against the ideal `PACE_SENDS / R`, and the achieved delivery rate
  as a ratio to R; the issue's bound: with the limit, delivered within 1.25 x ideal + 10 s
  and refusals <= 2 % of attempts; without it, within 2 x ideal + 30 s; in both, no
  email failed and no Message-ID arrived twice. A configuration that is not delivered
  within `GIVE_UP_AFTER` times its bound is given up and reported as not delivered;
- the relay's refusals, and their share of its attempts (every email offered to it:
  accepted + refused; a refused email is deferred, not an attempt in the outbox's
  `attempts`, which is reported beside it);
- duplicates: Message-IDs that arrived more than once (delivery is at least once: a
  duplicate carries the same Message-ID);
- the outbox rows of the measured emails by status (failed ones among them), and the
  most frequent `last_error`s, as `securesend emails` shows them;
- the CPU the worker processes (and their pool children) spent, per email delivered:
  over the whole configuration, and over the *waiting* alone, from the last HTTP answer
  until the last email arrived, when the workers have nothing to do but wait for the
  relay's next slot; a drain that spun instead of sleeping would show there (also as a
  share of one core);
- how many emails arrived in each second, to see the pace's shape; and, to see why, the
  counters and paces the workers' shared store holds at the end (worker.pacing) and the
  pace each throttle reply left, as the workers logged it (the first and the lowest).

A few warm-up sends (fewer than the relay accepts in a second) go first on each stack:
the first sends of a stack pay for its cold processes. The phase took 4-7 minutes here
at R = 25 (stack start, seeding and settling included), so it runs only with
`python -m bench --only pace`, not in a full run, which it would make half again as long.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.lanes import TimedSink
from tests.smtp_sink import ThrottlingSink
from tests.support import Stack
from worker.models import EmailStatus, OutboxEmail
from worker.pacing import make_pace_store

RELAY_RATE = 25.0
PACE_SENDS = 750
PACE_SENDS_QUICK = 250
PACE_CONCURRENCY = 16
# Within the relay's quota for one second (fewer at R < 4), so that the warm-up meets no
# refusal and leaves no pace behind it.
WARMUP_SENDS = 4
WARMUP_TIMEOUT_SECONDS = 60.0
# The bounds, in seconds, for `sends` emails at `rate` a second.
LIMITED_FACTOR, LIMITED_SLACK_SECONDS = 1.25, 10.0
UNLIMITED_FACTOR, UNLIMITED_SLACK_SECONDS = 2.0, 30.0
REFUSED_SHARE_MAX = 0.02
# A configuration not delivered within this many times its bound is given up.
GIVE_UP_AFTER = 3.0
EMAILS_POLL_SECONDS = 0.05
# The outbox's most frequent `last_error`s reported per configuration.
ERRORS_SHOWN = 5

_MESSAGE_ID = re.compile(rb"^message-id:\s*(\S+)", re.IGNORECASE | re.MULTILINE)
# What a worker logs on a throttle reply (worker.domain.delivery), after its timestamp:
# "email 30: relay 0 throttled it; relay:0 now at 6.25/s".
_THROTTLED_TO = re.compile(r"^(\S+ \S+) .*throttled it; (\S+) now at ([\d.]+)/s", re.MULTILINE)


class TimedThrottlingSink(ThrottlingSink, TimedSink):
    """The throttling relay, also noting when each email arrived (bench/lanes.py's
    `TimedSink`): the quota is `ThrottlingSink`'s, the arrival times `TimedSink`'s.
    `ThrottlingSink` comes first: its constructor takes the quota and passes the port on
    to `TimedSink`'s."""


@dataclass(frozen=True)
class PaceConfiguration:
    """Workers on the stack, and whether `MAIL_RATE_LIMIT` is set to the relay's rate."""

    workers: int
    limited: bool

    def env(self, relay_rate: float) -> dict[str, str]:
        """What the stack's processes get beyond the benchmark's own environment."""
        return {"MAIL_RATE_LIMIT": f"{relay_rate:g}/s"} if self.limited else {}

    def label(self, relay_rate: float) -> str:
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        limit = f"MAIL_RATE_LIMIT={relay_rate:g}/s" if self.limited else "no limit"
        return f"{workers}, {limit}"

    def bound(self, sends: int, relay_rate: float) -> float:
        """The issue's bound on the seconds to deliver `sends` emails."""
        ideal = sends / relay_rate
        if self.limited:
            return LIMITED_FACTOR * ideal + LIMITED_SLACK_SECONDS
        return UNLIMITED_FACTOR * ideal + UNLIMITED_SLACK_SECONDS


PACE_CONFIGURATIONS = (
    PaceConfiguration(workers=1, limited=True),
    PaceConfiguration(workers=1, limited=False),
    PaceConfiguration(workers=2, limited=True),
    PaceConfiguration(workers=2, limited=False),
)


def pace_drafts_needed(sends: int) -> int:
    """The fresh drafts one configuration sends: the warm-up's and the measured ones."""
    return WARMUP_SENDS + sends


def message_id(raw: bytes) -> bytes | None:
    """The Message-ID header of a raw email (None: it has none)."""
    found = _MESSAGE_ID.search(raw)  # the first: the headers come before any body
    return found.group(1) if found else None


class ByMessageId:
    """The emails that arrived at `sink` after it was created, by Message-ID: when each
    first arrived, and how many arrived again (kept as they arrive, so that waiting for
    hundreds of emails costs the load generator little at each poll)."""

    def __init__(self, sink: TimedSink) -> None:
        self._sink = sink
        self._next = sink.mark()
        self.first: dict[bytes, float] = {}
        self.again = 0

    def update(self) -> None:
        new = self._sink.arrivals(self._next)
        self._next += len(new)
        for arrived, received in new:
            key = message_id(received.raw) or received.raw  # no header: the whole email
            if key in self.first:
                self.again += 1
            else:
                self.first[key] = arrived

    def wait_for(self, count: int, *, deadline: float) -> bool:
        """Wait until `count` distinct emails arrived, or `deadline` (perf_counter)
        passed; whether they did."""
        while True:
            self.update()
            if len(self.first) >= count:
                return True
            if time.perf_counter() > deadline:
                return False
            time.sleep(EMAILS_POLL_SECONDS)

    @property
    def last(self) -> float | None:
        return max(self.first.values(), default=None)


def _last_outbox_id(stack: Stack) -> int:
    def read(session: Session) -> int:
        return int(session.execute(select(func.coalesce(func.max(OutboxEmail.id), 0))).scalar_one())

    return stack.database.run(read, write=False)


def _outbox(stack: Stack, after_id: int) -> dict[str, Any]:
    """The outbox rows written after `after_id` (the measured emails): how many by status,
    the attempts recorded, and the most frequent (status, last_error)s."""

    def read(session: Session) -> dict[str, Any]:
        measured = OutboxEmail.id > after_id
        statuses = session.execute(
            select(OutboxEmail.status, func.count(), func.sum(OutboxEmail.attempts))
            .where(measured)
            .group_by(OutboxEmail.status)
        ).all()
        errors = session.execute(
            select(OutboxEmail.status, OutboxEmail.last_error, func.count().label("n"))
            .where(measured, OutboxEmail.last_error.is_not(None))
            .group_by(OutboxEmail.status, OutboxEmail.last_error)
            .order_by(func.count().desc())
            .limit(ERRORS_SHOWN)
        ).all()
        return {
            "by_status": {str(status): int(n) for status, n, _ in statuses},
            "attempts_recorded": sum(int(attempts or 0) for _, _, attempts in statuses),
            "errors": [
                {"status": str(status), "last_error": error, "emails": int(n)}
                for status, error, n in errors
            ],
        }

    return stack.database.run(read, write=False)


def _pace_store(stack: Stack) -> dict[str, Any]:
    """What the workers' shared pace store (worker.pacing) holds: the counters by key and
    event (sent, throttled, deferred), and the paces still held (emails/s)."""
    client = redis.Redis.from_url(stack.config.redis_url)
    try:
        snapshot = make_pace_store(stack.settings, client).snapshot(1)
    finally:
        client.close()
    return {
        "counts": dict(sorted(snapshot.counts.items())),
        "paces": {key: round(pace, 2) for key, pace in sorted(snapshot.paces.items())},
    }


def _paces_after_throttling(stack: Stack) -> dict[str, Any]:
    """The paces the throttle replies left, from the workers' logs in time order: how
    many replies were logged, the pace the first one left and the lowest."""
    logged = sorted(
        (when, float(pace))
        for name in stack.processes
        if name.startswith("worker")
        for when, _, pace in _THROTTLED_TO.findall(stack.log(name))
    )
    paces = [pace for _, pace in logged]
    return {
        "replies_logged": len(paces),
        "first_per_s": paces[0] if paces else None,
        "lowest_per_s": min(paces, default=None),
    }


def _per_second(arrivals: list[float], started: float) -> list[int]:
    """How many of `arrivals` (perf_counter) fell in each whole second after `started`."""
    if not arrivals:
        return []
    counts = [0] * (math.floor(max(arrivals) - started) + 1)
    for arrived in arrivals:
        counts[max(0, math.floor(arrived - started))] += 1
    return counts


def _ms_per(seconds: float, emails: int) -> float | None:
    return round(seconds * 1000 / emails, 2) if emails else None


def measure_pace(
    stack: Stack,
    sink: TimedThrottlingSink,
    work: list[tuple[str, str]],
    *,
    configuration: PaceConfiguration,
    relay_rate: float,
    send: Callable[[list[tuple[str, str]]], dict[str, Any]],
    settle: Callable[[], None],
    worker_cpu: Callable[[], float],
) -> dict[str, Any]:
    """One configuration (module docstring) on a stack started with it and delivering to
    `sink`: `work` holds `pace_drafts_needed(sends)` fresh drafts. `send` sends drafts with
    their notification, `PACE_CONCURRENCY` at a time over HTTP, and returns the requests'
    figures (requests, errors, ...); `settle` waits until the stack is idle; `worker_cpu`
    is the CPU seconds the worker processes used so far (bench/run.py has all three)."""
    # No more than the relay accepts in a second, however slow it is told to be.
    warmup = work[: max(1, min(WARMUP_SENDS, int(relay_rate)))]
    measured = work[WARMUP_SENDS:]
    sends = len(measured)
    bound = configuration.bound(sends, relay_rate)

    warm = ByMessageId(sink)
    warmed = send(warmup)
    warm.wait_for(
        warmed["requests"] - warmed["errors"],
        deadline=time.perf_counter() + WARMUP_TIMEOUT_SECONDS,
    )
    settle()
    time.sleep(1.0)  # the relay's window empties: the measured emails find the whole quota

    after_id = _last_outbox_id(stack)
    accepted_before, refused_before = sink.accepted, sink.refused
    emails = ByMessageId(sink)
    cpu_before = worker_cpu()
    started = time.perf_counter()
    answered = send(measured)
    answered_at = time.perf_counter()
    cpu_answered = worker_cpu()
    expected = answered["requests"] - answered["errors"]
    delivered_all = emails.wait_for(expected, deadline=started + GIVE_UP_AFTER * bound)
    ended = emails.last if delivered_all and emails.last is not None else time.perf_counter()
    cpu_ended = worker_cpu()
    if delivered_all:
        settle()  # a late duplicate, or an email still being recorded, is counted too
    emails.update()

    accepted = sink.accepted - accepted_before
    refused = sink.refused - refused_before
    delivered = len(emails.first)
    seconds = ended - started
    waiting = max(0.0, ended - answered_at)
    emails_while_waiting = sum(1 for arrived in emails.first.values() if arrived > answered_at)
    outbox = _outbox(stack, after_id)
    failed = outbox["by_status"].get(EmailStatus.FAILED.value, 0)
    refused_share = refused / (accepted + refused) if accepted + refused else 0.0
    within = delivered_all and seconds <= bound
    met = (
        within
        and failed == 0
        and emails.again == 0
        and answered["errors"] == 0
        and (not configuration.limited or refused_share <= REFUSED_SHARE_MAX)
    )
    return {
        "configuration": configuration.label(relay_rate),
        "workers": configuration.workers,
        "mail_rate_limit": configuration.env(relay_rate).get("MAIL_RATE_LIMIT"),
        "sends": answered,
        "emails_expected": expected,
        "emails_delivered": delivered,
        "delivered": delivered_all,
        # None: given up after `gave_up_after_s`.
        "seconds": round(seconds, 2) if delivered_all else None,
        "ideal_s": round(sends / relay_rate, 2),
        "bound_s": round(bound, 2),
        "gave_up_after_s": round(GIVE_UP_AFTER * bound, 2),
        "within_bound": within,
        "rate_over_relay": round(delivered / seconds / relay_rate, 3) if seconds else None,
        "sends_answered_s": round(answered_at - started, 2),
        "relay": {
            "accepted": accepted,
            "refused": refused,
            "attempts": accepted + refused,
            "refused_share": round(refused_share, 4),
        },
        "duplicates": emails.again,
        "failed": failed,
        "outbox": outbox,
        "worker_cpu": {
            "ms_per_email": _ms_per(cpu_ended - cpu_before, delivered),
            "waiting_s": round(waiting, 2),
            "emails_while_waiting": emails_while_waiting,
            "waiting_ms_per_email": _ms_per(cpu_ended - cpu_answered, emails_while_waiting),
            "waiting_core_share": (
                round((cpu_ended - cpu_answered) / waiting, 3) if waiting else None
            ),
        },
        "emails_per_second": _per_second(list(emails.first.values()), started),
        "pace_store": _pace_store(stack),
        "paces_after_throttling": _paces_after_throttling(stack),
        "met": met,
    }


def pace_figures(
    configurations: list[dict[str, Any]], *, sends: int, relay_rate: float
) -> dict[str, Any]:
    """The phase's JSON ("pace"): its parameters and each configuration's figures."""
    return {
        "relay_rate": relay_rate,
        "sends": sends,
        "concurrency": PACE_CONCURRENCY,
        "configurations": configurations,
    }


def pace_targets(pace: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's bounds, one target per configuration, then refusals (with a limit),
    duplicates and failures over every configuration."""
    found = []
    for c in pace["configurations"]:
        seconds = c["seconds"] if c["seconds"] is not None else float("inf")
        found.append(
            {
                "target": f"pace, {c['configuration']}: seconds until every email arrived",
                "value": c["seconds"] if c["seconds"] is not None else "not delivered",
                "goal": f"<= {c['bound_s']} (ideal {c['ideal_s']})",
                "met": c["delivered"] and seconds <= c["bound_s"] and c["sends"]["errors"] == 0,
            }
        )
    for c in pace["configurations"]:
        if c["mail_rate_limit"] is not None:
            share = c["relay"]["refused_share"]
            found.append(
                {
                    "target": f"pace, {c['configuration']}: refusals / attempts at the relay",
                    "value": share,
                    "goal": f"<= {REFUSED_SHARE_MAX}",
                    "met": share <= REFUSED_SHARE_MAX,
                }
            )
    duplicates = sum(c["duplicates"] for c in pace["configurations"])
    failed = sum(c["failed"] for c in pace["configurations"])
    found += [
        {
            "target": "pace: Message-IDs received more than once, every configuration",
            "value": duplicates,
            "goal": "0",
            "met": duplicates == 0,
        },
        {
            "target": "pace: emails failed, every configuration",
            "value": failed,
            "goal": "0",
            "met": failed == 0,
        },
    ]
    return found


def print_pace(pace: dict[str, Any]) -> None:
    """One row per configuration, then what the outbox says where anything failed or was
    refused."""
    print(
        f"\nPace: {pace['sends']} SendMessages with their email at c={pace['concurrency']} "
        f"to a relay accepting {pace['relay_rate']:g} emails/s (ideal "
        f"{pace['sends'] / pace['relay_rate']:.1f} s)"
    )
    print(
        f"  {'configuration':<32} {'emails':>9} {'seconds':>8} {'bound':>6} {'rate/R':>6} "
        f"{'refused':>7} {'share':>6} {'dup':>4} {'failed':>6} | {'worker CPU ms/email':>19} "
        f"{'waiting ms/email':>16} {'core':>5}"
    )
    for c in pace["configurations"]:
        cpu = c["worker_cpu"]
        seconds = c["seconds"] if c["delivered"] else "gave up"
        print(
            f"  {c['configuration']:<32} {c['emails_delivered']:>4}/{c['emails_expected']:<4} "
            f"{seconds!s:>8} {c['bound_s']:>6} {c['rate_over_relay']!s:>6} "
            f"{c['relay']['refused']:>7} {c['relay']['refused_share']:>6} "
            f"{c['duplicates']:>4} {c['failed']:>6} | {cpu['ms_per_email']!s:>19} "
            f"{cpu['waiting_ms_per_email']!s:>16} {cpu['waiting_core_share']!s:>5}"
        )
    print(
        "  (seconds: from the first request until every email arrived; rate/R: emails "
        "delivered per second over the relay's rate; share: refusals / attempts at the "
        "relay; waiting: from the last HTTP answer until the last email, 'core' the share "
        "of one core the workers used then)"
    )
    for c in pace["configurations"]:
        outbox, paced = c["outbox"], c["paces_after_throttling"]
        throttled = (
            f"{paced['replies_logged']} throttle replies logged, the first left the pace at "
            f"{paced['first_per_s']}/s, the lowest at {paced['lowest_per_s']}/s"
            if paced["replies_logged"]
            else "no throttle reply logged"
        )
        print(
            f"  {c['configuration']}: sends answered in {c['sends_answered_s']} s "
            f"(p50 {c['sends']['p50_ms']} ms, p95 {c['sends']['p95_ms']} ms), outbox "
            f"{outbox['by_status']}, {outbox['attempts_recorded']} attempts recorded; "
            f"pace store (warm-up included) {c['pace_store']}; {throttled}"
        )
        print(f"    emails per second {c['emails_per_second']}")
        for error in outbox["errors"]:
            print(f"    {error['emails']} x {error['status']}: {error['last_error']}")

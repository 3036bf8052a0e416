"""The benchmark's mixed phase: sends a person waits for, alone and behind a bulk backlog.

Three measurements, one after the other, on the benchmark's stack:

- *bulk alone*: N sends with their notification email, enqueued directly through
  `worker.client` as another service does (README, "Enqueue from another service"), timed
  from the first publish until every job row has finished and every email has arrived at
  the SMTP server: bulk sends/s and emails/s;
- *interactive idle*: 20 synchronous SendMessages over HTTP with their notification,
  started one every 0.5 s whether or not the earlier ones were answered (20 people, each
  on a connection of their own): each answer's latency and status, and the time from each
  request until its notification arrived;
- *mixed*: another N bulk sends published the same way, then, as soon as publishing ends,
  20 more interactive sends as above: the same figures, and the bulk rate until the last
  bulk job finished and its email arrived;
- *bulk alone* once more: the rate the mixed batch is held to is the mean of the two
  alone batches, one before it and one after, so that what changes over the phase (the
  database grows with every batch, PostgreSQL vacuums after them) does not count against
  the mixed batch alone.

With `via="async"` the bulk sends arrive instead as HTTP SendMessages with `Prefer:
respond-async` (answered 202 at once, the way a service that does not wait sends over
HTTP), published by `ASYNC_PUBLISHERS` connections at a time.

Only what `worker.client` offered before sends had lanes is used (`build_send_job` without
a priority, `send_job_options`, `SEND_TASK`), so the phase also runs against the code from
before the lanes, for comparison.
"""

from __future__ import annotations

import asyncio
import binascii
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.http import Connection, HttpError
from bench.seed import Seed
from tests.smtp_sink import Received, SmtpSink
from tests.support import Stack
from worker.celery_factory import create_app
from worker.client import SEND_TASK, build_send_job, send_job_options
from worker.models import JobStatus, SendJob, guid_n_form

BulkVia = Literal["direct", "async"]
BULK_SENDS = 4000
BULK_SENDS_QUICK = 1000
INTERACTIVE_SENDS = 20
INTERACTIVE_INTERVAL_SECONDS = 0.5
# Connections publishing a bulk batch through HTTP with `Prefer: respond-async`.
ASYNC_PUBLISHERS = 16
# Each of the three measurements must end within this. Bulk sends with their emails ran
# at about 100/s here (10 ms each), so 0.25 s each leaves room for a slow, shared machine
# (and for interactive sends stuck behind the whole backlog, as they are without lanes)
# while still stopping a run whose jobs or emails never finish.
TIMEOUT_BASE_SECONDS = 120.0
TIMEOUT_SECONDS_PER_BULK_SEND = 0.25
# How often the job rows are read while waiting. A read of N rows' statuses costs the
# database and the load generator a few milliseconds, which the bulk rate would pay, so
# while emails are still due the rows are read only to notice failed jobs (which send
# none); once every job is accounted for by an email or a failure, often. The end time
# comes from the rows' `finished_at`, not from the moment a read saw them.
JOBS_POLL_SECONDS = 2.0
JOBS_POLL_SECONDS_AT_THE_END = 0.1
EMAILS_POLL_SECONDS = 0.05
# Before the first measurement: a stack just started (`--only lanes`) has cold worker
# processes, connections and caches, which would slow the "alone" batch alone.
WARMUP_BULK_SENDS = 50
WARMUP_INTERACTIVE_SENDS = 2

# The notification links to the message: `{PUBLIC_BASE_URL}/messages/{guid}`.
_MESSAGE_URL = re.compile(rb"/messages/([0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12})")


class LanesTimeout(RuntimeError):
    """A measurement of the mixed phase did not finish in its time."""


def drafts_needed(bulk: int) -> int:
    """How many fresh drafts the phase sends: the warm-up, two batches of bulk sends and
    two of interactive ones."""
    return WARMUP_BULK_SENDS + WARMUP_INTERACTIVE_SENDS + 3 * bulk + 2 * INTERACTIVE_SENDS


def phase_timeout(bulk: int) -> float:
    """The longest each of the three measurements may take, in seconds."""
    return TIMEOUT_BASE_SECONDS + TIMEOUT_SECONDS_PER_BULK_SEND * bulk


class TimedSink(SmtpSink):
    """The tests' SMTP server, also noting when each email arrived (`time.perf_counter`),
    so that an email can be timed from the request that queued it."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self._arrivals_lock = threading.Lock()
        self._arrivals: list[tuple[float, Received]] = []

    def record(self, received: Received) -> None:
        arrived = time.perf_counter()  # before any lock: the time it arrived
        super().record(received)
        with self._arrivals_lock:
            self._arrivals.append((arrived, received))

    def mark(self) -> int:
        """A position in the arrivals: `arrivals(mark)` are those after it."""
        with self._arrivals_lock:
            return len(self._arrivals)

    def arrivals(self, start: int = 0) -> list[tuple[float, Received]]:
        """(arrival time, email) of the emails that arrived after position `start`."""
        with self._arrivals_lock:
            return self._arrivals[start:]


def message_guid(received: Received) -> str | None:
    """The GUID (N form) of the message an email's link points to, or None."""
    # The bodies are quoted-printable, whose soft line breaks can split the link: decode
    # first. Headers come through unharmed enough for a search.
    found = _MESSAGE_URL.search(binascii.a2b_qp(received.raw))
    return guid_n_form(found.group(1).decode()) if found else None


class Arrivals:
    """The emails that arrived at `sink` after a mark, by the message GUID in their link:
    the first arrival of each (delivery is at least once; a duplicate is not later), and
    how many of the `watched` drafts have theirs (kept as they arrive: counting thousands
    of GUIDs at every poll would cost the load generator, which shares the cores)."""

    def __init__(self, sink: TimedSink, *, watched: frozenset[str] = frozenset()) -> None:
        self._sink = sink
        self._next = sink.mark()
        self._watched = watched
        self.by_guid: dict[str, float] = {}
        self.watched_arrived = 0

    def update(self) -> None:
        new = self._sink.arrivals(self._next)
        self._next += len(new)
        for arrived, received in new:
            guid = message_guid(received)
            if guid is not None and guid not in self.by_guid:
                self.by_guid[guid] = arrived
                self.watched_arrived += guid in self._watched

    def count(self, guids: Collection[str]) -> int:
        return sum(1 for guid in guids if guid in self.by_guid)

    def last(self, guids: Collection[str]) -> float | None:
        """When the last of `guids`' emails arrived (of those that did)."""
        return max((self.by_guid[g] for g in guids if g in self.by_guid), default=None)


@dataclass
class Batch:
    """Bulk sends of fresh drafts (`work`: session token and draft) and how they arrive:
    `via` "direct", as jobs built before the clock starts (the time measured is the
    workers', not the payloads'); or "async", as HTTP requests. Their job ids are known
    once published (an async send's from its 202)."""

    work: list[tuple[str, str]]
    via: BulkVia
    payloads: list[dict[str, Any]]
    guids: frozenset[str]
    job_ids: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.work)


def bulk_batch(stack: Stack, data: Seed, count: int, *, via: BulkVia = "direct") -> Batch:
    """`count` fresh drafts to send with their notification (the default), in the default
    lane of their way in: bulk."""
    work = data.take(count)
    payloads = (
        [
            build_send_job(
                sender_guid=data.sender_guids[token],
                message_guid=guid,
                secret_key=stack.settings.secret_key,
            )
            for token, guid in work
        ]
        if via == "direct"
        else []
    )
    return Batch(
        work=work,
        via=via,
        payloads=payloads,
        guids=frozenset(guid_n_form(guid) for _, guid in work),
    )


@dataclass(frozen=True)
class JobsState:
    """What the job rows of a batch say."""

    succeeded: int
    failed: int
    last_finished: datetime | None

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed


_FINISHED = {JobStatus.SUCCEEDED.value, JobStatus.FAILED.value}


def jobs_state(stack: Stack, job_ids: list[str]) -> JobsState:
    """The batch's job rows by status (a direct enqueue's row is written by the worker
    that takes it, so a job not yet taken has none)."""

    def read(session: Session) -> JobsState:
        rows = session.execute(
            select(SendJob.status, func.count(), func.max(SendJob.finished_at))
            .where(SendJob.id.in_(job_ids))
            .group_by(SendJob.status)
        ).all()
        count = {str(status): int(n) for status, n, _ in rows}
        ends = [last for status, _, last in rows if str(status) in _FINISHED and last is not None]
        return JobsState(
            succeeded=count.get(JobStatus.SUCCEEDED.value, 0),
            failed=count.get(JobStatus.FAILED.value, 0),
            last_finished=max(ends, default=None),
        )

    return stack.database.run(read, write=False)


@dataclass(frozen=True)
class Clock:
    """One instant on both clocks: the job rows' `finished_at` is wall time (written by
    the worker on this machine), the arrivals are `perf_counter`."""

    wall: float
    perf: float

    @classmethod
    def now(cls) -> Clock:
        return cls(wall=time.time(), perf=time.perf_counter())

    def perf_of(self, moment: datetime) -> float:
        return moment.timestamp() - self.wall + self.perf


@dataclass(frozen=True)
class BulkRun:
    """A batch of bulk sends from its first publish until its last job finished and its
    last email arrived."""

    sends: int
    state: JobsState
    emails: int
    publish_seconds: float
    seconds: float

    def figures(self) -> dict[str, Any]:
        return {
            "sends": self.sends,
            "succeeded": self.state.succeeded,
            "failed": self.state.failed,
            "emails": self.emails,
            "publish_s": round(self.publish_seconds, 2),
            "seconds": round(self.seconds, 2),
            "sends_per_s": round(self.state.succeeded / self.seconds, 1) if self.seconds else 0.0,
            "emails_per_s": round(self.emails / self.seconds, 1) if self.seconds else 0.0,
        }


@dataclass(frozen=True)
class Answered:
    """One interactive SendMessage: when it started, how long its answer took, its status
    (None: the connection failed) and its draft."""

    started: float  # perf_counter
    offset: float  # seconds after the first interactive send started
    latency: float
    status: int | None
    guid: str


def _publish(stack: Stack, batch: Batch) -> float:
    """Publish the batch as another service does, directly or through HTTP without
    waiting (`batch.via`), noting its job ids; how long publishing took."""
    if batch.via == "async":
        started = time.perf_counter()
        batch.job_ids = asyncio.run(_publish_async(stack, batch.work))
        return time.perf_counter() - started
    celery = create_app(stack.settings, results=False)  # it reads no result
    try:
        started = time.perf_counter()
        for payload in batch.payloads:
            celery.send_task(SEND_TASK, args=[payload], **send_job_options(payload))
        batch.job_ids = [str(p["jobId"]) for p in batch.payloads]
        return time.perf_counter() - started
    finally:
        celery.close()


async def _publish_async(stack: Stack, work: list[tuple[str, str]]) -> list[str]:
    """SendMessage with `Prefer: respond-async` for each draft, `ASYNC_PUBLISHERS` at a
    time; the job ids of the 202 answers (anything else stops the benchmark)."""
    pending = iter(work)
    job_ids: list[str] = []

    async def publisher() -> None:
        connection = Connection(stack.url(""))
        try:
            for token, guid in pending:
                answer = await connection.request(
                    "PUT",
                    f"/api/v1/messages/{guid}/send",
                    headers={"x-sm-session-token": token, "prefer": "respond-async"},
                    json_body={},
                )
                if answer.status != 202:
                    raise RuntimeError(f"lanes: an async send answered {answer.status}")
                job_ids.append(str(answer.json()["jobId"]))
        finally:
            await connection.close()

    await asyncio.gather(*(publisher() for _ in range(ASYNC_PUBLISHERS)))
    return job_ids


async def _interactive(
    stack: Stack, work: list[tuple[str, str]], *, deadline: float
) -> list[Answered]:
    """SendMessage with its notification for each draft in `work`, started one every
    `INTERACTIVE_INTERVAL_SECONDS` whether or not the earlier ones were answered, each on
    a connection of its own: what each person waited."""
    first = time.perf_counter()

    async def one(index: int, token: str, guid: str) -> Answered:
        await asyncio.sleep(
            max(0.0, first + index * INTERACTIVE_INTERVAL_SECONDS - time.perf_counter())
        )
        connection = Connection(stack.url(""))
        started = time.perf_counter()
        status: int | None
        try:
            answer = await connection.request(
                "PUT",
                f"/api/v1/messages/{guid}/send",
                headers={"x-sm-session-token": token},
                json_body={},  # the defaults: with the notification email
            )
            status = answer.status
        except HttpError:
            status = None
        finally:
            await connection.close()
        return Answered(
            started=started,
            offset=started - first,
            latency=time.perf_counter() - started,
            status=status,
            guid=guid_n_form(guid),
        )

    tasks = [asyncio.create_task(one(i, token, guid)) for i, (token, guid) in enumerate(work)]
    try:
        async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
            return list(await asyncio.gather(*tasks))
    except TimeoutError:
        unanswered = sum(1 for task in tasks if not task.done() or task.cancelled())
        raise LanesTimeout(
            f"lanes: {unanswered} of {len(work)} interactive SendMessages still unanswered "
            f"{time.perf_counter() - first:.0f} s after the first one started"
        ) from None


def _wait(
    stack: Stack,
    arrivals: Arrivals,
    *,
    batch: Batch | None,
    emails_of: Collection[str],
    deadline: float,
    timeout: float,
    what: str,
) -> JobsState | None:
    """Wait until the batch's jobs have all finished and the emails of its succeeded
    sends and of `emails_of` have all arrived; the batch's last job state. Raises
    LanesTimeout at `deadline` (the end of the measurement's `timeout`)."""
    state: JobsState | None = None
    last_read = -math.inf
    while True:
        arrivals.update()
        now = time.perf_counter()
        bulk_emails = arrivals.watched_arrived
        if batch is not None:
            failed = state.failed if state is not None else 0
            at_the_end = bulk_emails + failed >= batch.size
            interval = JOBS_POLL_SECONDS_AT_THE_END if at_the_end else JOBS_POLL_SECONDS
            if now - last_read >= interval:
                state = jobs_state(stack, batch.job_ids)
                last_read = now
        others = arrivals.count(emails_of)
        bulk_done = batch is None or (
            state is not None and state.finished == batch.size and bulk_emails >= state.succeeded
        )
        if bulk_done and others == len(emails_of):
            return state
        if now > deadline:
            jobs = (
                f"{state.succeeded if state else 0} of {batch.size} bulk jobs "
                f"succeeded, {state.failed if state else 0} failed, {bulk_emails} of their "
                "emails arrived; "
                if batch is not None
                else ""
            )
            raise LanesTimeout(
                f"lanes, {what}: not finished in its {timeout:.0f} s: {jobs}{others} of "
                f"{len(emails_of)} interactive notifications arrived"
            )
        time.sleep(EMAILS_POLL_SECONDS)


def _bulk_run(
    *, batch: Batch, state: JobsState, arrivals: Arrivals, clock: Clock, publish_seconds: float
) -> BulkRun:
    """The batch's figures, from the first publish (`clock`) until the later of its last
    job's end and its last email's arrival."""
    ends = [clock.perf]
    if state.last_finished is not None:
        ends.append(clock.perf_of(state.last_finished))
    last_email = arrivals.last(batch.guids)
    if last_email is not None:
        ends.append(last_email)
    return BulkRun(
        sends=batch.size,
        state=state,
        emails=arrivals.watched_arrived,
        publish_seconds=publish_seconds,
        seconds=max(ends) - clock.perf,
    )


def _percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value that at least `share` of them do not exceed (of
    20 values, p95 is the 19th, not the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _interactive_figures(answers: list[Answered], arrivals: Arrivals) -> dict[str, Any]:
    """Latency (until the answer, whatever its status) and email arrival (from the
    request, for the sends answered 200) of interactive sends, and each send's own."""
    latencies = [a.latency for a in answers]
    emails = [
        arrivals.by_guid[a.guid] - a.started
        for a in answers
        if a.status == 200 and a.guid in arrivals.by_guid
    ]
    statuses = Counter("no answer" if a.status is None else str(a.status) for a in answers)
    figures: dict[str, Any] = {
        "requests": len(answers),
        "errors": sum(1 for a in answers if a.status != 200),
        "statuses": dict(sorted(statuses.items())),
        "p50_ms": _ms(_percentile(latencies, 0.50)),
        "p95_ms": _ms(_percentile(latencies, 0.95)),
        "max_ms": _ms(max(latencies)),
        "emails": len(emails),
        "email_p50_ms": _ms(_percentile(emails, 0.50)) if emails else None,
        "email_p95_ms": _ms(_percentile(emails, 0.95)) if emails else None,
        "email_max_ms": _ms(max(emails)) if emails else None,
        "sends": [
            {
                "offset_s": round(a.offset, 3),
                "latency_ms": _ms(a.latency),
                "status": a.status,
                "email_ms": (
                    _ms(arrivals.by_guid[a.guid] - a.started)
                    if a.guid in arrivals.by_guid
                    else None
                ),
            }
            for a in answers
        ],
    }
    return figures


def _emailed(answers: list[Answered]) -> set[str]:
    """The drafts whose send was answered 200: each has a notification coming."""
    return {a.guid for a in answers if a.status == 200}


def measure_bulk_alone(stack: Stack, sink: TimedSink, batch: Batch) -> BulkRun:
    """Bulk sends with nothing else running: the rate the mixed phase is held to."""
    timeout = phase_timeout(batch.size)
    deadline = time.perf_counter() + timeout
    arrivals = Arrivals(sink, watched=batch.guids)
    clock = Clock.now()
    publish_seconds = _publish(stack, batch)
    state = _wait(
        stack,
        arrivals,
        batch=batch,
        emails_of=(),
        deadline=deadline,
        timeout=timeout,
        what="bulk alone",
    )
    assert state is not None
    return _bulk_run(
        batch=batch, state=state, arrivals=arrivals, clock=clock, publish_seconds=publish_seconds
    )


def measure_interactive_idle(
    stack: Stack, sink: TimedSink, work: list[tuple[str, str]], *, timeout: float
) -> dict[str, Any]:
    """Interactive sends on an idle stack: latency, status and email arrival of each."""
    deadline = time.perf_counter() + timeout
    arrivals = Arrivals(sink)
    answers = asyncio.run(_interactive(stack, work, deadline=deadline))
    _wait(
        stack,
        arrivals,
        batch=None,
        emails_of=_emailed(answers),
        deadline=deadline,
        timeout=timeout,
        what="interactive idle",
    )
    return _interactive_figures(answers, arrivals)


def measure_mixed(
    stack: Stack, sink: TimedSink, batch: Batch, work: list[tuple[str, str]]
) -> tuple[dict[str, Any], BulkRun]:
    """A bulk batch published, then at once the interactive sends, one every half second
    while the workers have the backlog: the interactive figures, and the bulk rate until
    the batch's last job and email."""
    timeout = phase_timeout(batch.size)
    deadline = time.perf_counter() + timeout
    arrivals = Arrivals(sink, watched=batch.guids)
    clock = Clock.now()
    publish_seconds = _publish(stack, batch)
    answers = asyncio.run(_interactive(stack, work, deadline=deadline))
    state = _wait(
        stack,
        arrivals,
        batch=batch,
        emails_of=_emailed(answers),
        deadline=deadline,
        timeout=timeout,
        what="mixed",
    )
    assert state is not None
    bulk = _bulk_run(
        batch=batch, state=state, arrivals=arrivals, clock=clock, publish_seconds=publish_seconds
    )
    figures = _interactive_figures(answers, arrivals)
    # Which interactive sends met the backlog: a batch the workers clear before the last
    # interactive send starts (a small --bulk) leaves the later ones on an idle stack.
    first = min(a.started for a in answers)
    backlog_until = clock.perf + bulk.seconds - first
    figures["backlog_until_offset_s"] = round(backlog_until, 3)
    figures["started_during_backlog"] = sum(1 for a in answers if a.offset < backlog_until)
    return figures, bulk


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None:
        return None
    return round(value / baseline, 3) if baseline else float("inf")


def measure_lanes(
    stack: Stack,
    sink: TimedSink,
    data: Seed,
    *,
    bulk: int,
    settle: Callable[[], None],
    via: BulkVia = "direct",
) -> dict[str, Any]:
    """The three measurements (module docstring), each started on a settled stack, with
    the mixed phase's figures as ratios to the idle and alone ones. `data` must hold
    `drafts_needed(bulk)` fresh drafts."""
    warmup_batch = bulk_batch(stack, data, WARMUP_BULK_SENDS)
    warmup_work = data.take(WARMUP_INTERACTIVE_SENDS)
    alone_batch = bulk_batch(stack, data, bulk, via=via)
    idle_work = data.take(INTERACTIVE_SENDS)
    mixed_batch = bulk_batch(stack, data, bulk, via=via)
    mixed_work = data.take(INTERACTIVE_SENDS)
    after_batch = bulk_batch(stack, data, bulk, via=via)

    # Each path's first sends pay for connections, imports and caches: a small mixed
    # round first, its figures thrown away.
    measure_mixed(stack, sink, warmup_batch, warmup_work)
    settle()
    alone = measure_bulk_alone(stack, sink, alone_batch)
    settle()
    idle = measure_interactive_idle(stack, sink, idle_work, timeout=phase_timeout(0))
    settle()
    mixed, mixed_bulk = measure_mixed(stack, sink, mixed_batch, mixed_work)
    settle()
    after = measure_bulk_alone(stack, sink, after_batch)
    settle()

    alone_figures = _mean_rate(alone.figures(), after.figures())
    mixed_bulk_figures = mixed_bulk.figures()
    return {
        "bulk_sends": bulk,
        "bulk_via": via,
        "interactive_sends": INTERACTIVE_SENDS,
        "interactive_interval_s": INTERACTIVE_INTERVAL_SECONDS,
        "bulk_alone": alone_figures,
        "interactive_idle": idle,
        "mixed": {"interactive": mixed, "bulk": mixed_bulk_figures},
        "ratios": {
            "interactive_p50_mixed_over_idle": _ratio(mixed["p50_ms"], idle["p50_ms"]),
            "interactive_p95_mixed_over_idle": _ratio(mixed["p95_ms"], idle["p95_ms"]),
            "interactive_max_mixed_over_idle": _ratio(mixed["max_ms"], idle["max_ms"]),
            "email_p50_mixed_over_idle": _ratio(mixed["email_p50_ms"], idle["email_p50_ms"]),
            "email_p95_mixed_over_idle": _ratio(mixed["email_p95_ms"], idle["email_p95_ms"]),
            "bulk_sends_per_s_mixed_over_alone": _ratio(
                mixed_bulk_figures["sends_per_s"], alone_figures["sends_per_s"]
            ),
            "bulk_emails_per_s_mixed_over_alone": _ratio(
                mixed_bulk_figures["emails_per_s"], alone_figures["emails_per_s"]
            ),
        },
    }


def _mean_rate(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The two alone batches as one: their mean rates, their counts added, each kept."""
    return {
        "sends": before["sends"] + after["sends"],
        "succeeded": before["succeeded"] + after["succeeded"],
        "failed": before["failed"] + after["failed"],
        "emails": before["emails"] + after["emails"],
        "seconds": round(before["seconds"] + after["seconds"], 2),
        "publish_s": round(before["publish_s"] + after["publish_s"], 2),
        "sends_per_s": round((before["sends_per_s"] + after["sends_per_s"]) / 2, 1),
        "emails_per_s": round((before["emails_per_s"] + after["emails_per_s"]) / 2, 1),
        "before_mixed": before,
        "after_mixed": after,
    }


def print_lanes(lanes: dict[str, Any]) -> None:
    """The phase's figures, mixed beside idle (interactive) and alone (bulk)."""
    idle, mixed = lanes["interactive_idle"], lanes["mixed"]["interactive"]
    alone, mixed_bulk = lanes["bulk_alone"], lanes["mixed"]["bulk"]
    ratios = lanes["ratios"]
    print(
        f"\nLanes: {lanes['bulk_sends']} bulk sends "
        + (
            "enqueued directly"
            if lanes.get("bulk_via", "direct") == "direct"
            else "over HTTP with Prefer: respond-async"
        )
        + " (with their emails), "
        f"{lanes['interactive_sends']} interactive SendMessages over HTTP (one every "
        f"{lanes['interactive_interval_s']} s, with their emails)"
    )
    print(f"  {'interactive':<30} {'idle':>10} {'mixed':>10} {'mixed/idle':>11}")
    rows = [
        ("answer p50 (ms)", "p50_ms", "interactive_p50_mixed_over_idle"),
        ("answer p95 (ms)", "p95_ms", "interactive_p95_mixed_over_idle"),
        ("answer max (ms)", "max_ms", "interactive_max_mixed_over_idle"),
        ("email after request p50 (ms)", "email_p50_ms", "email_p50_mixed_over_idle"),
        ("email after request p95 (ms)", "email_p95_ms", "email_p95_mixed_over_idle"),
        ("email after request max (ms)", "email_max_ms", None),
    ]
    for label, key, ratio in rows:
        shown = "" if ratio is None else str(ratios[ratio])
        print(f"  {label:<30} {idle[key]!s:>10} {mixed[key]!s:>10} {shown:>11}")
    print(f"  {'statuses':<30} idle {idle['statuses']}, mixed {mixed['statuses']}")
    during = mixed["started_during_backlog"]
    print(
        f"  {'started during the backlog':<30} {during} of {mixed['requests']} (the bulk batch "
        f"was done {mixed['backlog_until_offset_s']} s after the first interactive send started)"
        + ("" if during == mixed["requests"] else ": the others met an idle stack")
    )
    print(f"  {'emails arrived':<30} idle {idle['emails']}, mixed {mixed['emails']}")
    print(f"  {'bulk':<30} {'alone':>10} {'mixed':>10} {'mixed/alone':>11}")
    print(
        f"  {'sends/s':<30} {alone['sends_per_s']:>10} {mixed_bulk['sends_per_s']:>10} "
        f"{ratios['bulk_sends_per_s_mixed_over_alone']!s:>11}"
    )
    print(
        f"  {'emails/s':<30} {alone['emails_per_s']:>10} {mixed_bulk['emails_per_s']:>10} "
        f"{ratios['bulk_emails_per_s_mixed_over_alone']!s:>11}"
    )
    runs = [("alone", alone)]
    if "before_mixed" in alone:
        runs = [("alone before", alone["before_mixed"]), ("alone after", alone["after_mixed"])]
    for name, figures in [*runs, ("mixed", mixed_bulk)]:
        print(
            f"  bulk {name}: {figures['succeeded']} of {figures['sends']} succeeded, "
            f"{figures['failed']} failed, {figures['emails']} emails, in {figures['seconds']} s "
            f"(publishing {figures['publish_s']} s)"
        )

"""The benchmark: the whole send path against bare Celery, measured in one run.

    .venv/bin/python -m bench [--quick] [--runs 3] [--bulk N] [--out bench/results/latest.json]
    .venv/bin/python -m bench --only lanes [--bulk 300]    # the mixed phase alone
    .venv/bin/python -m bench --only pace [--quick] [--relay-rate 25]   # only this way
    .venv/bin/python -m bench --only attachments [--quick]              # only this way
    .venv/bin/python -m bench --only emails [--quick]   # the email rate and the peer alone

Starts its own API process and one worker (concurrency 2) on this machine's PostgreSQL (a
database of its own, dropped afterwards) and Redis (database 11, flushed), an SMTP server
in this process (aiosmtpd) that the worker delivers to, and the reference endpoint
`bench/noop_api.py` in a uvicorn process of its own; seeds its own data, and prints a
table and JSON. Every target is a ratio to a baseline measured in the same run, because
the machine is shared and noisy:

- SendMessage through HTTP (notification off) at concurrency 1, 16, 64 (throughput,
  p50/p95/p99), against the *bare round trip* (bench/bare.py): a FastAPI endpoint without
  access log that publishes a no-op task to a plain Celery worker (`-c 2`, Celery's
  defaults, a Redis database of its own) and awaits its result over Redis pub/sub, driven
  through HTTP by the same load generator, in three rounds that alternate with the send's
  (`ROUNDS`); beside it, clearly apart, securesend's own no-op round trip
  (`bench/noop_api.py`: `securesend.ping` through securesend's worker and listener, with
  an access log, which costs more than the bare one) and the same without HTTP
  (`securesend.ping` published from this process). Every target is a ratio to the bare
  round trip (issue 29); `--runs 3` gives each target's median and spread;
- SendMessage with its notification email (the default) at c=16: emails delivered to the
  SMTP server per second, in two rounds each followed by a round of bare round trips at
  c=16, the baseline of the email rate; and CPU per email by process; then the peer,
  django-post-office with Celery doing a templated email per request
  (bench/post_office.py), the same number of sends at c=16 on the same machine
  (`--only emails` runs this phase alone, on a stack of its own);
- the banned-keyword scan of a 100 KB body with 10,000 keywords against 10 keywords;
- a 500-recipient send against a 1-recipient send;
- 1,000 concurrent waiting SendMessage requests on one API process;
- outbox delivery to a local SMTP server with one connection against one per email;
- peak RSS of the API and worker processes;
- SearchMessages in a mailbox of 100,000 messages against GetUserSettings (bench/search.py);
- for each load level, the CPU milliseconds per operation spent by the API, the worker,
  PostgreSQL, Redis, the reference endpoint and the load generator (from /proc): on two
  shared cores, the total is what bounds throughput;
- the lanes, "mixed" phase (bench/lanes.py, JSON key "lanes"): N bulk sends with their
  emails enqueued directly through `worker.client` (N = 4,000, 1,000 with --quick, or
  --bulk), timed from the first publish until every job row finished and every email
  arrived (*bulk alone*); 20 synchronous SendMessages over HTTP with their emails, one
  started every 0.5 s whatever the earlier ones do (*interactive idle*); then another N
  bulk sends and, as soon as they are published, 20 more interactive sends (*mixed*).
  Interactive answer latency p50/p95/max, statuses and each email's arrival after its
  request, mixed against idle, and the bulk rate mixed against alone, as ratios; targets
  in the mixed phase: interactive p95 <= 1 s, max <= 2 s, every answer 200, their emails'
  p95 <= 5 s, bulk sends/s >= 0.9 x alone. `--only lanes` runs this phase alone, on a
  stack of its own;
- only with `--only pace`, not in a full run (four stacks of its own, 4-7 minutes, would
  make it half again as long): the pace phase (bench/pace.py, JSON key "pace"), delivery
  against a relay that accepts R emails a second (25, or --relay-rate) and throttles
  beyond: 750 SendMessages with their email (250 with --quick) at c=16, with one worker
  and with two, each with MAIL_RATE_LIMIT = R and without a limit, each on a stack of its
  own. The time from the first request until every email arrived against 750 / R, as the
  delivery rate over R; the relay's refusals per attempt, duplicate Message-IDs, failed
  emails and the workers' CPU per email while waiting; the issue's bounds as targets
  (with the limit: within 1.25 x ideal + 10 s, refusals <= 2 %; without: within
  2 x ideal + 30 s; always no duplicate, no failure);
- only with `--only attachments`, not in a full run (a task of its own, not the send's):
  the attachments phase (bench/attachments.py, JSON key "attachments"), a 25 MB file
  uploaded in 2 MiB chunks and downloaded through HTTP at c=1 and c=8, in MB/s, against
  the same bytes written and read with PostgreSQL's binary COPY in the same run, in five
  rounds (one with --quick); and the API's RSS before, during and after eight concurrent
  uploads.

Besides the JSON, a PNG at the same path (`.png`, bench/plot.py, needs the `bench` extra's
matplotlib): latency p50/p95 and throughput per concurrency level, send against the no-op
HTTP round trip; the interactive sends' answer latency and email arrival, idle against
mixed, with the targets, and each send over time against the bulk backlog; and the bulk
rate alone against mixed; the pace phase's emails delivered over time and in each second,
per configuration, against the relay's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api_shim.dispatch import RedisResultListener
from bench.attachments import (
    ATTACHMENT_ROUNDS,
    ATTACHMENT_ROUNDS_QUICK,
    attachment_drafts_needed,
    measure_attachments,
    print_attachments,
)
from bench.http import Connection, HttpError
from bench.lanes import (
    BULK_SENDS,
    BULK_SENDS_QUICK,
    INTERACTIVE_SENDS,
    BulkVia,
    TimedSink,
    drafts_needed,
    measure_lanes,
    print_lanes,
)
from bench.pace import (
    PACE_CONCURRENCY,
    PACE_CONFIGURATIONS,
    PACE_SENDS,
    PACE_SENDS_QUICK,
    RELAY_RATE,
    PaceConfiguration,
    TimedThrottlingSink,
    measure_pace,
    pace_drafts_needed,
    pace_figures,
    pace_targets,
    print_pace,
)
from bench.post_office import measure_post_office
from bench.procs import cpu_seconds, pids_named, process_tree, settle, status_kb
from bench.search import MAILBOX, measure_search, print_search
from bench.seed import SENDERS, Seed, seed
from bench.stack import bench_stack
from bench.standalone import banned_scan_ratio, smtp_reuse_ratio
from bench.timing import Run, drive, drive_http
from tests.smtp_sink import SmtpSink
from tests.support import (
    Stack,
    flush_redis,
    free_port,
    wait_for_http,
)
from worker.celery_factory import create_app
from worker.processes import child_dies_with_parent
from worker.queues import PING_TASK, SEND_QUEUE

ROOT = Path(__file__).resolve().parent.parent

LEVELS = (1, 16, 64)
KINDS = ("send", "bare", "noop_http", "ping", "api_read")
EMAIL_LEVEL = 16
# Each send-rate figure is three rounds of sends, each followed by a round of no-op round
# trips; each email-rate figure two rounds of sends with their notification, each followed
# by a round of no-op round trips at the same concurrency. The machine's speed drifts by
# ±10 % over a run: alternating lets the drift hit both sides of a ratio alike.
ROUNDS = 3
EMAIL_ROUNDS = 2
EMAILS_DELIVERED_TIMEOUT_SECONDS = 300.0


# The send-rate targets are for sends without a notification; the email-rate target and
# the single sends below send one (the default).
NO_NOTIFICATION: dict[str, Any] = {"sendEmailNotification": False}
NOTIFY: dict[str, Any] = {}


async def _answered(connection: Connection, status: int, method: str, path: str, **kw: Any) -> bool:
    """One request; whether it was answered with `status`."""
    try:
        answer = await connection.request(method, path, **kw)
    except HttpError:
        return False
    return answer.status == status


async def measure_sends(
    stack: Stack, work: list[tuple[str, str]], concurrency: int, body: dict[str, Any]
) -> Run:
    async def one(connection: Connection, i: int) -> bool:
        token, guid = work[i]
        return await _answered(
            connection,
            200,
            "PUT",
            f"/api/v1/messages/{guid}/send",
            headers={"x-sm-session-token": token},
            json_body=body,
        )

    return await drive_http(stack.url(""), concurrency, len(work), one)


async def measure_reads(
    stack: Stack, jobs: list[tuple[str, str]], count: int, concurrency: int
) -> Run:
    """GetJob through HTTP: what every authenticated request costs (HTTP, rule 1 and one
    transaction in the API), with no Celery and no send. Part of the floor below."""

    async def one(connection: Connection, i: int) -> bool:
        token, job_id = jobs[i % len(jobs)]
        return await _answered(
            connection, 200, "GET", f"/api/v1/jobs/{job_id}", headers={"x-sm-session-token": token}
        )

    return await drive_http(stack.url(""), concurrency, count, one)


async def measure_noop_http(noop_url: str, count: int, concurrency: int) -> Run:
    """The reference: HTTP → publish a no-op task → its result over pub/sub → HTTP."""

    async def one(connection: Connection, _: int) -> bool:
        return await _answered(connection, 200, "PUT", "/noop")

    return await drive_http(noop_url, concurrency, count, one)


async def measure_ping(stack: Stack, count: int, concurrency: int) -> Run:
    celery = create_app(stack.settings, results=False)  # publishes as the API does
    listener = RedisResultListener(stack.settings)
    await listener.start()
    loop = asyncio.get_running_loop()
    publisher = ThreadPoolExecutor(max_workers=8)
    try:

        async def one(_: int, __: int) -> bool:
            from worker.models import new_guid

            task_id = new_guid()
            async with listener.watch(task_id) as done:
                await loop.run_in_executor(
                    publisher,
                    lambda: celery.send_task(PING_TASK, task_id=task_id, queue=SEND_QUEUE),
                )
                meta = await asyncio.wait_for(done, 60)
            return bool(meta.get("status") == "SUCCESS")

        return await drive(concurrency, count, one)
    finally:
        publisher.shutdown()
        await listener.stop()


def _peak_rss_mb(pid: int) -> float:
    """VmHWM of a process and all its descendants, in MB."""
    return round(status_kb(pid, "VmHWM") / 1024, 1)


def _cpu_snapshot(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by each part: where a send's cost goes on two cores."""
    workers = [p.pid for name, p in stack.processes.items() if name.startswith("worker")]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    noop = stack.processes.get(NOOP_API)
    bare = [p.pid for name, p in stack.processes.items() if name in (BARE_API, BARE_WORKER)]
    return {
        "api": cpu_seconds(process_tree(stack.processes["api"].pid)),
        "noop_api": cpu_seconds(process_tree(noop.pid)) if noop is not None else 0.0,
        "bare": cpu_seconds([pid for b in bare for pid in process_tree(b)]),
        "workers": cpu_seconds([pid for w in workers for pid in process_tree(w)]),
        "postgres": cpu_seconds(pids_named("postgres")),
        "redis": cpu_seconds(pids_named("redis-server")),
        "load_generator": usage.ru_utime + usage.ru_stime,
    }


def _settle(stack: Stack) -> None:
    """Wait until the stack is idle (`bench.procs.settle`). What a measurement leaves
    running (the outbox drain of its sends' emails, PostgreSQL's autovacuum) is then
    counted in its own CPU, not in the next one's."""
    settle(lambda: _cpu_snapshot(stack))


@dataclass
class Measured:
    """One measurement: its run, and the CPU seconds each part used for it (counted
    until the stack was idle again: a send's email is delivered after its answer)."""

    run: Run
    cpu: dict[str, float]


def _measure(stack: Stack, measure: Coroutine[Any, Any, Run]) -> Measured:
    _settle(stack)
    before = _cpu_snapshot(stack)
    run = asyncio.run(measure)
    _settle(stack)
    after = _cpu_snapshot(stack)
    return Measured(run=run, cpu={part: after[part] - before[part] for part in before})


def _figures(rounds: list[Measured]) -> dict[str, Any]:
    """The figures of one or more rounds of the same measurement taken as one: requests
    over their summed wall time, latency percentiles over all of them, and the CPU
    milliseconds per operation."""
    run = Run(
        latencies=[latency for m in rounds for latency in m.run.latencies],
        errors=sum(m.run.errors for m in rounds),
        wall=sum(m.run.wall for m in rounds),
    )
    figures: dict[str, Any] = run.figures()
    operations = max(1, len(run.latencies))
    per_op = {part: sum(m.cpu[part] for m in rounds) * 1000 / operations for part in rounds[0].cpu}
    figures["cpu_ms_per_op"] = {part: round(ms, 2) for part, ms in per_op.items()}
    figures["cpu_ms_per_op"]["total"] = round(sum(per_op.values()), 2)
    return figures


def _measured(stack: Stack, measure: Coroutine[Any, Any, Run]) -> dict[str, Any]:
    """One measurement's figures (`_figures`)."""
    return _figures([_measure(stack, measure)])


def _ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 3) if baseline else float("inf")


def _send_once(stack: Stack, token: str, guid: str) -> float:
    started = time.perf_counter()
    with stack.client() as client:
        response = client.put(
            f"/api/v1/messages/{guid}/send", json=NOTIFY, headers={"x-sm-session-token": token}
        )
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def _open_jobs(stack: Stack, work: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(session token, job id) of one queued send per draft in `work`, for GetJob."""
    opened = []
    with stack.client() as client:
        for token, guid in work:
            response = client.put(
                f"/api/v1/messages/{guid}/send",
                json=NO_NOTIFICATION,
                headers={"x-sm-session-token": token, "prefer": "respond-async"},
            )
            assert response.status_code == 202, response.text
            opened.append((token, response.json()["jobId"]))
    return opened


NOOP_API = "noop_api"


def start_noop_api(stack: Stack) -> str:
    """Start the reference endpoint (bench/noop_api.py) as one uvicorn process among the
    stack's processes (stopped with them); its base URL."""
    port = free_port()
    log = open(stack.var_dir / f"{NOOP_API}.log", "ab")  # noqa: SIM115 - lives with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.noop_api:create_app", "--factory"]
        # uvicorn's defaults, access log included, as securesend's API runs with them.
        + ["--host", "127.0.0.1", "--port", str(port), "--log-level", "info"],
        env={**stack.env, "REDIS_URL": stack.config.redis_url},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=child_dies_with_parent(),  # noqa: PLW1509 - no threads started yet
    )
    stack.processes[NOOP_API] = process
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/ready", process)
    return url


BARE_API, BARE_WORKER = "bare_api", "bare_worker"
BARE_REDIS_URL = os.environ.get("BENCH_BARE_REDIS_URL", "redis://127.0.0.1:6379/10")


def start_bare(stack: Stack) -> str:
    """Start the bare round trip (bench/bare.py): a plain Celery worker (`-c 2`, Celery's
    defaults) and the endpoint in one uvicorn process without access log, on a Redis
    database of their own; among the stack's processes (stopped with them). Its URL."""
    flush_redis(BARE_REDIS_URL)
    env = {**stack.env, "BARE_REDIS_URL": BARE_REDIS_URL}
    port = free_port()
    commands = {
        BARE_WORKER: ["-m", "celery", "-A", "bench.bare", "worker", "-c", "2"]
        + ["--loglevel", "warning"],
        BARE_API: ["-m", "uvicorn", "bench.bare:create_api", "--factory", "--no-access-log"]
        + ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
    }
    for name, args in commands.items():
        log = open(stack.var_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        stack.processes[name] = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=child_dies_with_parent(),  # noqa: PLW1509 - no threads started yet
        )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/ready", stack.processes[BARE_API])
    asyncio.run(measure_noop_http(url, 20, 1))  # the worker has started when one is answered
    return url


@dataclass
class EmailRound:
    """One round of sends with their notification, and the emails it delivered."""

    sends: Run
    delivered: int
    expected: int
    elapsed: float  # from the first request until the last email arrived
    cpu: dict[str, float]  # CPU seconds by part, until the stack was idle again


def measure_emails(
    stack: Stack, sink: SmtpSink, work: list[tuple[str, str]], concurrency: int
) -> EmailRound:
    """Sends with their notification (one recipient each): the emails delivered to the
    SMTP server, the time from the first request until the last email arrived, and the
    CPU every process spent until the stack was idle again."""
    _settle(stack)
    before, delivered_before = _cpu_snapshot(stack), sink.total()
    started = time.perf_counter()
    sends = asyncio.run(measure_sends(stack, work, concurrency, NOTIFY))
    deadline = time.monotonic() + EMAILS_DELIVERED_TIMEOUT_SECONDS
    while sink.total() - delivered_before < len(work) and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    delivered = sink.total() - delivered_before
    _settle(stack)
    after = _cpu_snapshot(stack)
    cpu = {part: after[part] - before[part] for part in before}
    return EmailRound(sends, delivered, len(work), elapsed, cpu)


def _email_figures(rounds: list[EmailRound], bares: list[Measured]) -> dict[str, Any]:
    """The email rounds taken as one, with the bare round trips measured after each."""
    delivered = sum(r.delivered for r in rounds)
    per_email = {
        part: sum(r.cpu[part] for r in rounds) * 1000 / max(1, delivered) for part in rounds[0].cpu
    }
    return {
        "sends": _figures([Measured(run=r.sends, cpu=r.cpu) for r in rounds]),
        "emails_delivered": delivered,
        "emails_expected": sum(r.expected for r in rounds),
        "emails_per_s": round(delivered / sum(r.elapsed for r in rounds), 1),
        "cpu_ms_per_email": {
            **{part: round(ms, 2) for part, ms in per_email.items()},
            "total": round(sum(per_email.values()), 2),
        },
        "bare": _figures(bares),
        "ratio_by_round": [
            _ratio(r.delivered / r.elapsed, b.run.rate) for r, b in zip(rounds, bares, strict=True)
        ],
    }


def run(quick: bool, *, bulk: int | None = None) -> dict[str, Any]:
    """Every measurement (module docstring); `bulk` sends per batch in the mixed phase
    (by default `BULK_SENDS`, or `BULK_SENDS_QUICK` with `quick`)."""
    scale = 0.25 if quick else 1.0
    counts = {1: int(300 * scale), 16: int(800 * scale), 64: int(1200 * scale)}
    email_sends = int(800 * scale)
    bulk = bulk if bulk is not None else BULK_SENDS_QUICK if quick else BULK_SENDS
    var_dir = Path(tempfile.mkdtemp(prefix="securesend-bench-"))
    with (
        TimedSink.running(free_port()) as sink,
        bench_stack(smtp_url=sink.url, var_dir=var_dir) as stack,
    ):
        noop_url = start_noop_api(stack)
        bare_url = start_bare(stack)
        data: Seed = seed(
            stack,
            drafts=ROUNDS * sum(counts.values())
            + EMAIL_ROUNDS * email_sends
            + 1000
            + 40
            + SENDERS
            + drafts_needed(bulk),
            big_recipients=500,
        )
        results: dict[str, Any] = {"levels": {}}
        jobs = _open_jobs(stack, data.take(SENDERS))
        for level in LEVELS:
            count = counts[level]
            sends, noops, bares = [], [], []
            for _ in range(ROUNDS):  # alternately, so that the machine's drift hits all
                work = data.take(count)
                sends.append(_measure(stack, measure_sends(stack, work, level, NO_NOTIFICATION)))
                bares.append(_measure(stack, measure_noop_http(bare_url, count, level)))
                noops.append(_measure(stack, measure_noop_http(noop_url, count, level)))
            results["levels"][level] = {
                "send": _figures(sends),
                "bare": _figures(bares),
                "noop_http": _figures(noops),
                "ratio_by_round": [
                    _ratio(s.run.rate, b.run.rate) for s, b in zip(sends, bares, strict=True)
                ],
                "ratio_to_noop_http_by_round": [
                    _ratio(s.run.rate, n.run.rate) for s, n in zip(sends, noops, strict=True)
                ],
                "ping": _measured(stack, measure_ping(stack, count, level)),
                "api_read": _measured(stack, measure_reads(stack, jobs, count, level)),
            }
        results.update(_email_phase(stack, sink, data, bare_url, email_sends))

        one_recipient = [_send_once(stack, *data.take(1)[0]) for _ in range(15)]
        big = [_send_once(stack, token, guid) for token, guid in data.big_drafts]
        results["recipients"] = {
            "send_1_recipient_ms": round(statistics.median(one_recipient) * 1000, 2),
            "send_500_recipients_ms": round(statistics.median(big) * 1000, 2),
        }
        crowd = asyncio.run(measure_sends(stack, data.take(1000), 1000, NOTIFY))
        results["concurrent_1000"] = crowd.figures()
        results["lanes"] = measure_lanes(
            stack, sink, data, bulk=bulk, settle=lambda: _settle(stack)
        )
        results["search"] = measure_search(stack, messages=int(MAILBOX * scale))
        results["rss_mb"] = {
            "api": _peak_rss_mb(stack.processes["api"].pid),
            "worker": _peak_rss_mb(stack.processes["worker"].pid),
            "noop_api": _peak_rss_mb(stack.processes[NOOP_API].pid),
            "bare_api": _peak_rss_mb(stack.processes[BARE_API].pid),
        }
    results["banned_scan"] = banned_scan_ratio()
    results["smtp"] = smtp_reuse_ratio(count=int(400 * scale) or 50)
    results["targets"] = targets(results)
    results["floor"] = floor(results)
    return results


def _email_phase(
    stack: Stack, sink: SmtpSink, data: Seed, bare_url: str, sends: int
) -> dict[str, Any]:
    """The email rounds, each followed by bare round trips, then the peer on the same
    machine (the same sends at the same concurrency) while this stack sits idle."""
    rounds, bares = [], []
    for _ in range(EMAIL_ROUNDS):
        rounds.append(measure_emails(stack, sink, data.take(sends), EMAIL_LEVEL))
        bares.append(_measure(stack, measure_noop_http(bare_url, sends, EMAIL_LEVEL)))
    return {
        "emails": _email_figures(rounds, bares),
        "post_office": measure_post_office(EMAIL_ROUNDS * sends, EMAIL_LEVEL),
    }


def run_emails(quick: bool) -> dict[str, Any]:
    """The email phase alone, on a stack of its own: for comparing two versions of the
    drain quickly."""
    sends = int(800 * (0.25 if quick else 1.0))
    var_dir = Path(tempfile.mkdtemp(prefix="securesend-bench-"))
    with (
        TimedSink.running(free_port()) as sink,
        bench_stack(smtp_url=sink.url, var_dir=var_dir) as stack,
    ):
        bare_url = start_bare(stack)
        data = seed(stack, drafts=EMAIL_ROUNDS * sends, big_recipients=1, big_drafts=0)
        results = _email_phase(stack, sink, data, bare_url, sends)
    results["targets"] = targets(results)
    return results


def run_lanes(bulk: int, *, via: BulkVia = "direct", workers: int = 1) -> dict[str, Any]:
    """The mixed phase alone (bench/lanes.py), on a stack of its own with `workers`
    workers, the bulk arriving `via` direct enqueue or HTTP respond-async: for checking
    it, the issue's variants, or comparing two versions of the lanes quickly."""
    var_dir = Path(tempfile.mkdtemp(prefix="securesend-bench-"))
    with (
        TimedSink.running(free_port()) as sink,
        bench_stack(smtp_url=sink.url, var_dir=var_dir, workers=workers) as stack,
    ):
        data = seed(stack, drafts=drafts_needed(bulk), big_recipients=1, big_drafts=0)
        lanes = measure_lanes(stack, sink, data, bulk=bulk, settle=lambda: _settle(stack), via=via)
        results: dict[str, Any] = {"lanes": {**lanes, "workers": workers}}
    results["targets"] = targets(results)
    return results


def run_pace(sends: int, *, relay_rate: float) -> dict[str, Any]:
    """The pace phase (bench/pace.py): each configuration on a stack and a throttling
    relay of its own, one after the other."""
    measured = [
        _pace_configuration(configuration, sends=sends, relay_rate=relay_rate)
        for configuration in PACE_CONFIGURATIONS
    ]
    results: dict[str, Any] = {"pace": pace_figures(measured, sends=sends, relay_rate=relay_rate)}
    results["targets"] = targets(results)
    return results


def run_attachments(quick: bool) -> dict[str, Any]:
    """The attachments phase (bench/attachments.py) on a stack of its own."""
    rounds = ATTACHMENT_ROUNDS_QUICK if quick else ATTACHMENT_ROUNDS
    var_dir = Path(tempfile.mkdtemp(prefix="securesend-bench-"))
    with (
        SmtpSink.running(free_port()) as sink,
        bench_stack(smtp_url=sink.url, var_dir=var_dir) as stack,
    ):
        data = seed(stack, drafts=attachment_drafts_needed(rounds), big_recipients=1, big_drafts=0)
        results: dict[str, Any] = {
            "attachments": measure_attachments(
                stack, data, rounds=rounds, settle=lambda: _settle(stack)
            )
        }
    results["targets"] = targets(results)
    return results


def _pace_configuration(
    configuration: PaceConfiguration, *, sends: int, relay_rate: float
) -> dict[str, Any]:
    """One configuration of the pace phase: its stack started with its workers and
    `MAIL_RATE_LIMIT`, delivering to a relay that accepts `relay_rate` emails a second."""
    var_dir = Path(tempfile.mkdtemp(prefix="securesend-bench-"))
    with (
        TimedThrottlingSink.running(free_port(), per_second=relay_rate) as sink,
        bench_stack(
            smtp_url=sink.url,
            var_dir=var_dir,
            workers=configuration.workers,
            env=configuration.env(relay_rate),
        ) as stack,
    ):
        drafts = pace_drafts_needed(sends)
        data = seed(stack, drafts=drafts, big_recipients=1, big_drafts=0)
        return measure_pace(
            stack,
            sink,
            data.take(drafts),
            configuration=configuration,
            relay_rate=relay_rate,
            send=lambda work: asyncio.run(
                measure_sends(stack, work, PACE_CONCURRENCY, NOTIFY)
            ).figures(),
            settle=lambda: _settle(stack),
            worker_cpu=lambda: _cpu_snapshot(stack)["workers"],
        )


def _target(name: str, value: float, goal: str, met: bool) -> dict[str, Any]:
    return {"target": name, "value": value, "goal": goal, "met": met}


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's targets, each against the no-op HTTP round trip of the same run, the
    figures that must stay where they were, the lanes' targets and the pace's bounds; of
    what `r` holds (`--only lanes` measures the lanes alone, `--only pace` the pace)."""
    found = _send_targets(r) if "levels" in r else []
    if "emails" in r:
        found += _email_targets(r)
    if "lanes" in r:
        found += _lane_targets(r["lanes"])
    if "pace" in r:
        found += pace_targets(r["pace"])
    return found


def _lane_targets(lanes: dict[str, Any]) -> list[dict[str, Any]]:
    """Interactive sends stay quick behind a bulk backlog, and the backlog barely slows."""
    idle, mixed = lanes["interactive_idle"], lanes["mixed"]["interactive"]
    errors = idle["errors"] + mixed["errors"]
    requests = idle["requests"] + mixed["requests"]
    email_p95 = mixed["email_p95_ms"]
    bulk_ratio = lanes["ratios"]["bulk_sends_per_s_mixed_over_alone"]
    bulk_failed = lanes["bulk_alone"]["failed"] + lanes["mixed"]["bulk"]["failed"]
    return [
        _target(
            "lanes: interactive SendMessage p95 behind a bulk backlog (ms)",
            mixed["p95_ms"],
            "<= 1000",
            mixed["p95_ms"] <= 1000,
        ),
        _target(
            "lanes: interactive SendMessage max behind a bulk backlog (ms)",
            mixed["max_ms"],
            "<= 2000",
            mixed["max_ms"] <= 2000,
        ),
        _target(
            "lanes: interactive SendMessages not answered 200 (idle and mixed)",
            errors,
            f"0 of {requests}",
            errors == 0 and requests == 2 * INTERACTIVE_SENDS,
        ),
        _target(
            "lanes: interactive notification p95 after the request, mixed (ms)",
            email_p95 if email_p95 is not None else float("inf"),
            "<= 5000",
            email_p95 is not None and email_p95 <= 5000 and mixed["emails"] == mixed["requests"],
        ),
        _target(
            "lanes: bulk sends/s behind interactive sends / bulk alone",
            bulk_ratio if bulk_ratio is not None else 0.0,
            ">= 0.9",
            bulk_ratio is not None and bulk_ratio >= 0.9 and bulk_failed == 0,
        ),
    ]


def _send_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 29's targets, each against the bare round trip of the same run, and the
    figures that must stay where they were."""
    levels = r["levels"]

    def throughput(level: int, kind: str) -> float:
        return float(levels[level][kind]["throughput_per_s"])

    found = [
        _target(
            f"sends/s at c={level}, notification off / bare round trip",
            ratio := _ratio(throughput(level, "send"), throughput(level, "bare")),
            ">= 0.4",
            ratio >= 0.4,
        )
        for level in (16, 64)
    ]
    at_16, at_64 = (_ratio(throughput(c, "send"), throughput(c, "bare")) for c in (16, 64))
    found.append(
        _target(
            "sends/s ratio to the bare round trip at c=64 / at c=16",
            fall := _ratio(at_64, at_16),
            ">= 0.95 (no worse at c=64)",
            fall >= 0.95,
        )
    )
    p50_delta = round(levels[1]["send"]["p50_ms"] - levels[1]["bare"]["p50_ms"], 2)
    found.append(
        _target("p50 at c=1: send - bare round trip (ms)", p50_delta, "<= 3", p50_delta <= 3)
    )
    recipients = _ratio(
        r["recipients"]["send_500_recipients_ms"], r["recipients"]["send_1_recipient_ms"]
    )
    crowd = r["concurrent_1000"]
    banned = r["banned_scan"]["ratio"]
    smtp = r["smtp"]["ratio"]
    found += [
        _target(
            "banned scan 100 KB: 10,000 keywords / 10 keywords", banned, "<= 1.5", banned <= 1.5
        ),
        _target("send: 500 recipients / 1 recipient", recipients, "<= 20", recipients <= 20),
        _target(
            "1,000 concurrent waiting sends on one API process: errors",
            crowd["errors"],
            "0 of 1000",
            crowd["errors"] == 0 and crowd["requests"] == 1000,
        ),
        _target(
            "outbox delivery: one connection / one connection per email", smtp, ">= 3", smtp >= 3
        ),
    ]
    return found


def _email_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The email rate against the bare round trip and against django-post-office."""
    emails, peer = r["emails"], r["post_office"]
    return [
        _target(
            f"emails delivered/s at c={EMAIL_LEVEL} / bare round trips/s",
            ratio := _ratio(emails["emails_per_s"], emails["bare"]["throughput_per_s"]),
            ">= 0.3",
            ratio >= 0.3 and emails["emails_delivered"] == emails["emails_expected"],
        ),
        _target(
            f"emails delivered/s at c={EMAIL_LEVEL} / django-post-office's (same machine)",
            ratio := _ratio(emails["emails_per_s"], peer["emails_per_s"]),
            ">= 1.0",
            ratio >= 1.0 and peer["emails_delivered"] == peer["sends"],
        ),
    ]


def floor(r: dict[str, Any]) -> dict[str, Any]:
    """What is left between a send and the bare round trip, measured in this run.

    A SendMessage is at least an authenticated request with a transaction in the API
    (GetJob measures that) plus a round trip through Celery. Where the two cores are
    saturated (c=16 and 64), throughput is inversely proportional to the CPU per
    operation: the figures say how much CPU a send takes beyond the bare round trip (and
    beyond securesend's own no-op, which runs through its worker and listener), and how
    much a ratio of 0.4 allows.
    """
    one = r["levels"][1]
    out: dict[str, Any] = {
        "c1": {
            "p50_ms_beyond_bare": round(one["send"]["p50_ms"] - one["bare"]["p50_ms"], 2),
            "p50_ms_beyond_noop_http": round(one["send"]["p50_ms"] - one["noop_http"]["p50_ms"], 2),
            "p50_ms_of_get_job": one["api_read"]["p50_ms"],
        }
    }
    for level, figures in r["levels"].items():
        if level == 1:
            continue  # not CPU-bound
        send, bare, noop = (
            figures[k]["cpu_ms_per_op"]["total"] for k in ("send", "bare", "noop_http")
        )
        out[f"c{level}"] = {
            "cpu_ms_per_send": send,
            "cpu_ms_per_bare": bare,
            "cpu_ms_per_noop_http": noop,
            "cpu_ms_per_send_allowed_at_ratio_0_4": round(bare / 0.4, 2),
        }
    return out


def combine_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several full runs' targets as one: each target's median over the runs, its spread
    (lowest, highest) and in how many runs it was met; met when the median meets it."""
    combined = []
    for i, first in enumerate(runs[0]["targets"]):
        values = [float(r["targets"][i]["value"]) for r in runs]
        met = sum(bool(r["targets"][i]["met"]) for r in runs)
        combined.append(
            {
                "target": first["target"],
                "value": round(statistics.median(values), 3),
                "spread": [round(min(values), 3), round(max(values), 3)],
                "goal": first["goal"],
                "met": met * 2 > len(runs),
                "met_in_runs": f"{met} of {len(runs)}",
            }
        )
    return combined


def print_combined(combined: list[dict[str, Any]]) -> None:
    print(f"\ntargets over {combined[0]['met_in_runs'].split()[-1]} runs (median, spread):")
    for t in combined:
        low, high = t["spread"]
        print(
            f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['value']} "
            f"({low} to {high}; met in {t['met_in_runs']}) (goal {t['goal']})"
        )


def print_table(r: dict[str, Any]) -> None:
    """The figures `r` holds, then the targets."""
    if "levels" in r:
        _print_sends(r)
    elif "emails" in r:
        _print_emails(r)
    if "lanes" in r:
        print_lanes(r["lanes"])
    if "pace" in r:
        print_pace(r["pace"])
    if "attachments" in r:
        print_attachments(r["attachments"])
    print("\ntargets:")
    for t in r["targets"]:
        print(
            f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['value']} (goal {t['goal']})"
        )


def _print_sends(r: dict[str, Any]) -> None:
    print(
        "\nSendMessage (notification off) vs. the bare round trip (plain Celery, bench/bare.py),"
        " securesend's own no-op round trip and the no-op ping"
    )
    print(
        f"{'c':>4} | {'send/s':>8} {'p50':>7} {'p95':>7} {'p99':>7} | "
        f"{'bare/s':>8} {'p50':>7} {'p95':>7} | ratio | "
        f"{'noop/s':>8} {'p50':>7} | ratio | {'ping/s':>8} {'p50':>7} | ratio"
    )
    for level, figures in r["levels"].items():
        s, b, n, p = (figures[k] for k in ("send", "bare", "noop_http", "ping"))
        print(
            f"{level:>4} | {s['throughput_per_s']:>8} {s['p50_ms']:>7} {s['p95_ms']:>7} "
            f"{s['p99_ms']:>7} | {b['throughput_per_s']:>8} {b['p50_ms']:>7} "
            f"{b['p95_ms']:>7} | {_ratio(s['throughput_per_s'], b['throughput_per_s'])} | "
            f"{n['throughput_per_s']:>8} {n['p50_ms']:>7} | "
            f"{_ratio(s['throughput_per_s'], n['throughput_per_s'])} | "
            f"{p['throughput_per_s']:>8} {p['p50_ms']:>7} | "
            f"{_ratio(s['throughput_per_s'], p['throughput_per_s'])}"
        )
    by_round = [f"c={level} {f['ratio_by_round']}" for level, f in r["levels"].items()]
    print("  ratio to the bare round trip by round: " + "; ".join(by_round))
    print("\nGetJob through HTTP (an authenticated request, no Celery: part of every send)")
    for level, figures in r["levels"].items():
        g = figures["api_read"]
        print(f"{level:>4} | {g['throughput_per_s']:>8} {g['p50_ms']:>7} {g['p95_ms']:>7}")
    print("\nCPU milliseconds per operation, by process (the machine has two cores)")
    for level, figures in r["levels"].items():
        for kind in KINDS:
            cpu = figures[kind]["cpu_ms_per_op"]
            print(f"{level:>4} {kind:<9} " + "  ".join(f"{k} {v}" for k, v in cpu.items()))
    _print_emails(r)
    print(f"\nrecipients: {r['recipients']}")
    print(f"1,000 concurrent: {r['concurrent_1000']}")
    print(f"banned scan: {r['banned_scan']}")
    print(f"smtp: {r['smtp']}")
    print(f"peak RSS (MB): {r['rss_mb']}")
    print_search(r["search"])
    print("\nwhat is left between a send and the bare round trip")
    for level, f in r["floor"].items():
        print(f"  {level}: " + ", ".join(f"{k} {v}" for k, v in f.items()))


def _print_emails(r: dict[str, Any]) -> None:
    e = r["emails"]
    print(
        f"\nSendMessage with its notification at c={EMAIL_LEVEL}: {e['emails_delivered']} of "
        f"{e['emails_expected']} emails delivered, {e['emails_per_s']} emails/s "
        f"(sends {e['sends']['throughput_per_s']}/s, p50 {e['sends']['p50_ms']} ms)"
    )
    print(
        f"  bare round trips after each round: {e['bare']['throughput_per_s']}/s; "
        f"ratio by round {e['ratio_by_round']}"
    )
    print("  CPU ms per email: " + "  ".join(f"{k} {v}" for k, v in e["cpu_ms_per_email"].items()))
    if "post_office" in r:
        p = r["post_office"]
        print(
            f"  django-post-office + Celery (bench/post_office.py): {p['emails_delivered']} of "
            f"{p['sends']} emails, {p['emails_per_s']} emails/s; CPU ms per email "
            + "  ".join(f"{k} {v}" for k, v in p["cpu_ms_per_email"].items())
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a quarter of the requests")
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="full runs, one after the other; the targets as medians with their spread",
    )
    parser.add_argument(
        "--only",
        choices=["lanes", "pace", "attachments", "emails"],
        help="run only this phase, on a stack of its own (pace: one per configuration; "
        "default output: bench/results/<phase>.json); the pace and attachments phases run "
        "only this way",
    )
    parser.add_argument(
        "--bulk",
        type=int,
        help=f"bulk sends per batch in the lanes phase (default {BULK_SENDS}, "
        f"{BULK_SENDS_QUICK} with --quick)",
    )
    parser.add_argument(
        "--bulk-via",
        choices=["direct", "async"],
        default="direct",
        help="with --only lanes: the bulk sends enqueued directly (worker.client, the "
        "default) or sent over HTTP with Prefer: respond-async",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="with --only lanes: workers (concurrency 2 each) on the stack (default 1)",
    )
    parser.add_argument(
        "--relay-rate",
        type=float,
        default=RELAY_RATE,
        help=f"with --only pace: emails per second the throttling relay accepts (default "
        f"{RELAY_RATE:g}); {PACE_SENDS} sends ({PACE_SENDS_QUICK} with --quick)",
    )
    parser.add_argument(
        "--out",
        help="the JSON (default bench/results/latest.json); the plot is written beside it, as .png",
    )
    args = parser.parse_args(argv)
    if args.bulk is not None and args.bulk < 1:
        parser.error("--bulk must be at least 1")
    if args.relay_rate <= 0:
        parser.error("--relay-rate must be above 0")
    if args.only == "lanes":
        bulk = args.bulk or (BULK_SENDS_QUICK if args.quick else BULK_SENDS)
        results = run_lanes(bulk, via=args.bulk_via, workers=args.workers)
        default_out = ROOT / "bench" / "results" / "lanes.json"
    elif args.only == "pace":
        sends = PACE_SENDS_QUICK if args.quick else PACE_SENDS
        results = run_pace(sends, relay_rate=args.relay_rate)
        default_out = ROOT / "bench" / "results" / "pace.json"
    elif args.only == "attachments":
        results = run_attachments(args.quick)
        default_out = ROOT / "bench" / "results" / "attachments.json"
    elif args.only == "emails":
        results = run_emails(args.quick)
        default_out = ROOT / "bench" / "results" / "emails.json"
    else:
        runs = [run(args.quick, bulk=args.bulk) for _ in range(max(1, args.runs))]
        results = runs[-1]
        if len(runs) > 1:
            results = {**results, "runs": runs, "combined": combine_runs(runs)}
        default_out = ROOT / "bench" / "results" / "latest.json"
    print_table(results)
    if "combined" in results:
        print_combined(results["combined"])
    out = Path(args.out) if args.out else default_out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nJSON: {out}")
    _write_plot(results, out.with_suffix(".png"))
    print(json.dumps(results, default=str))
    return 0


def _write_plot(results: dict[str, Any], path: Path) -> None:
    """The plot beside the JSON; without matplotlib (the `bench` extra), a note instead:
    the figures are in the JSON either way."""
    try:
        from bench.plot import panels, write_plot
    except ImportError as e:
        print(f"no plot ({e}): .venv/bin/pip install -e '.[bench]'")
        return
    if not panels(results):
        print("no plot: nothing in these results is drawn (the attachments phase)")
        return
    write_plot(results, path)
    print(f"plot: {path}")

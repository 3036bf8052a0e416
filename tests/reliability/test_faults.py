"""Breaking things on purpose, with the settings that ship and no beat process: a worker
killed mid-burst (alone and replaced, or one of two), a graceful worker shutdown
mid-burst, and Redis restarted mid-run. Every request is answered, every send happens
exactly once, and every email goes out; how long recovery took and how many emails
arrived twice are printed and written to var/reliability/."""

from __future__ import annotations

import re
import signal
import threading
import time
from typing import Any

import httpx
from sqlalchemy import select

from tests.reliability.conftest import (
    Fault,
    RedisServer,
    SentinelCluster,
    answered,
    emails_out,
    send_all,
    sent_exactly_once,
)
from worker import broker
from worker.celery_factory import create_app
from worker.models import WorkerHeartbeat
from worker.queues import SEND_TASK

SENDS = 300
# Issue 15: every send final and every email delivered within a minute of a worker's death.
RECOVERY_LIMIT_SECONDS = 60
# Issue 28 aims at 10 s for a lone worker replaced a second later (measured 7.9 s, and
# printed by the test); the bound has room for a machine busy with the rest of the suite.
LONE_RECOVERY_BOUND_SECONDS = 30


def _burst(fault: Fault, tag: str, *, break_at: int, action: Any) -> dict[str, Any]:
    """SENDS sends, 16 at a time, `action()` a third of the way in (it returns when it
    broke something, as time.monotonic()); then every send final and every email
    delivered, timed from the break."""
    world = fault.world(tag)
    reader = world.user("reader")
    guids = fault.drafts(world, reader, SENDS)
    broke: list[float] = []
    breaking: list[bool] = []
    once = threading.Lock()

    def progress(n: int) -> None:
        # Called from every sending thread: the break happens once, in the thread that
        # reached it, while the other threads go on sending.
        with once:
            if n < break_at or breaking:
                return
            breaking.append(True)
        broke.append(action())

    started = time.monotonic()
    responses = send_all(fault, world.token, guids, on_progress=progress)
    figures: dict[str, Any] = answered(fault, world.token, responses)
    sent_exactly_once(fault, world.sender, guids)
    figures["duplicate_emails"] = emails_out(fault, guids, reader)
    assert broke, "the burst ended before the break"
    figures["sends"] = SENDS
    figures["seconds_to_all_delivered"] = round(time.monotonic() - started, 1)
    figures["seconds_from_break_to_all_final_and_delivered"] = round(time.monotonic() - broke[0], 1)
    return figures


def _kill_while_it_holds_a_send(fault: Fault, name: str) -> float:
    """kill -9 worker `name` at a moment it holds a send job it has not acknowledged: the
    worker is stopped (SIGSTOP, so it cannot finish one meanwhile), its unacknowledged
    messages looked at, and then killed, or let go on for a few milliseconds and tried
    again (10 s at most). A fast worker is often between two sends."""
    app = create_app(fault.stack.settings)
    deadline = time.monotonic() + 10
    while True:
        fault.signal_worker(name, signal.SIGSTOP)
        if any(d.task_name == SEND_TASK for d in broker.delivered(app)):
            break
        if time.monotonic() > deadline:
            raise AssertionError("the worker held no send for 10 s")
        fault.signal_worker(name, signal.SIGCONT)
        time.sleep(0.005)
    return fault.kill_worker(name)  # SIGKILL ends stopped processes too


def _buried_workers(stack: Any, *, within: float) -> list[str]:
    """The workers found dead and taken over, waiting up to `within` seconds for one."""
    deadline = time.monotonic() + within
    while True:
        with stack.database.read_session() as session:
            dead = list(
                session.scalars(
                    select(WorkerHeartbeat.id).where(WorkerHeartbeat.buried_at.is_not(None))
                )
            )
        if dead or time.monotonic() > deadline:
            return dead
        time.sleep(0.5)


def _takeovers(stack: Any) -> dict[str, float]:
    metrics = httpx.get(stack.url("/metrics"), timeout=10).text
    return {
        kind: float(value)
        for kind, value in re.findall(r'securesend_takeovers_total\{kind="(\w+)"\} (\S+)', metrics)
    }


def test_kill_9_of_the_only_worker_replaced_a_second_later(
    lone_worker_fault: Fault, unique: str
) -> None:
    """The issue's case: a worker host lost a third of the way in; a replacement starts a
    second later and takes over what the dead one held, well before Redis's visibility
    timeout (300 s) would have given it back: 5 s after its last heartbeat."""
    fault = lone_worker_fault

    def kill_and_replace() -> float:
        killed_at = _kill_while_it_holds_a_send(fault, "worker")
        threading.Timer(1.0, fault.stack.start_worker, args=("replacement",)).start()
        return killed_at

    figures = _burst(fault, unique, break_at=SENDS // 3, action=kill_and_replace)
    # The kill can land after the held send was done and before it was acknowledged;
    # then the burst ends before the replacement has beaten long enough to call the
    # dead worker dead (15 s), and the burial comes after it.
    dead = _buried_workers(fault.stack, within=RECOVERY_LIMIT_SECONDS)
    figures["takeovers"] = _takeovers(fault.stack)
    fault.report("kill-9-lone-worker", figures)
    assert len(dead) == 1  # the killed worker, found dead by its replacement
    assert f"workers ['{dead[0]}'] died" in fault.stack.log("replacement")
    assert sum(figures["takeovers"].values()) >= 1  # it held sends or emails under load
    metrics = httpx.get(fault.stack.url("/metrics"), timeout=10).text
    alive = re.search(r"^securesend_workers_alive (\S+)$", metrics, re.M)
    assert alive is not None and float(alive.group(1)) == 1, alive  # the replacement
    recovered = figures["seconds_from_break_to_all_final_and_delivered"]
    assert recovered <= LONE_RECOVERY_BOUND_SECONDS
    # Each of the dead worker's two pool processes can lose the record of one email it had
    # just handed to the server: at-least-once, recognisable by Message-ID. Goal 0.
    assert figures["duplicate_emails"] <= 2


def test_kill_9_one_of_two_workers_a_third_of_the_way_in(worker_fault: Fault, unique: str) -> None:
    figures = _burst(
        worker_fault,
        unique,
        break_at=SENDS // 3,
        action=lambda: worker_fault.kill_worker("worker1"),
    )
    figures["takeovers"] = _takeovers(worker_fault.stack)
    worker_fault.report("kill-9-worker", figures)
    assert figures["seconds_from_break_to_all_final_and_delivered"] <= RECOVERY_LIMIT_SECONDS
    assert figures["duplicate_emails"] <= 2


def test_sigterm_mid_burst_loses_nothing(worker_fault: Fault, unique: str) -> None:
    def stop() -> float:
        worker_fault.stop_worker("worker1")
        return time.monotonic()

    figures = _burst(worker_fault, unique, break_at=SENDS // 3, action=stop)
    process = worker_fault.stack.processes["worker1"]
    assert process.wait(30) == 0  # a warm shutdown exits cleanly, within the soft window
    with worker_fault.stack.database.read_session() as session:
        buried = session.scalars(
            select(WorkerHeartbeat.id).where(WorkerHeartbeat.buried_at.is_not(None))
        ).all()
    worker_fault.report("sigterm-worker", figures)
    assert buried == []  # a clean stop is not taken for a death
    assert figures["duplicate_emails"] == 0


def test_redis_restart_mid_run_recovers_by_itself(
    redis_fault: tuple[Fault, RedisServer], unique: str
) -> None:
    fault, server = redis_fault

    def restart() -> None:
        server.kill()  # no persistence: whatever was queued in Redis is gone
        time.sleep(2)
        server.start()

    def break_redis() -> float:
        threading.Thread(target=restart, daemon=True).start()
        return time.monotonic()

    figures = _burst(fault, unique, break_at=SENDS // 3, action=break_redis)
    fault.report("redis-restart", figures)
    assert figures["seconds_from_break_to_all_final_and_delivered"] <= 2 * RECOVERY_LIMIT_SECONDS
    assert figures["duplicate_emails"] <= 2


def test_a_sentinel_failover_mid_run_is_followed_by_every_process(
    sentinel_fault: tuple[Fault, SentinelCluster], unique: str
) -> None:
    """Issue 28: the Redis master killed with kill -9 a third of the way into 300 sends
    with notification; the sentinels promote the replica, and the API, the workers, the
    result listener, the drain flags and the pace follow it without a restart. What the
    old master had not replicated is recovered from the database: the job rows (the jobs
    sweep) and the outbox."""
    fault, cluster = sentinel_fault
    old_master = cluster.master.port

    def kill_master() -> float:
        cluster.master.kill()
        return time.monotonic()

    figures = _burst(fault, unique, break_at=SENDS // 3, action=kill_master)
    figures["new_master_port"] = cluster.master_port()
    fault.report("sentinel-failover", figures)
    assert figures["new_master_port"] != old_master
    assert figures["seconds_from_break_to_all_final_and_delivered"] <= RECOVERY_LIMIT_SECONDS
    assert figures["duplicate_emails"] == 0
    health = httpx.get(fault.stack.url("/readyz"), timeout=10)
    assert health.status_code == 200, health.text

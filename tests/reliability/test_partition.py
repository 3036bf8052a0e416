"""The network between one worker and PostgreSQL, Redis and the relay cut for 30 s
mid-burst and healed (a partition: packets dropped, no connection closed), with the
shipped settings: its timeouts end what hangs, the other worker takes over what it
held, and when the network heals it comes back, drops what it no longer holds and takes
work again. Nothing lost, nothing twice, no process restarted."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy import select

from tests.reliability.conftest import (
    Fault,
    answered,
    emails_out,
    send_all,
    sent_exactly_once,
)
from tests.reliability.partition import Partition
from worker.models import WorkerHeartbeat

SENDS = 300
CUT_SECONDS = 30


def _first_seen(fault: Fault, name: str, text: str, since: float, limit: float) -> float | None:
    """Seconds after `since` at which `text` first shows in the log of `name` (polled)."""
    deadline = since + limit
    while time.monotonic() < deadline:
        if text in fault.stack.log(name):
            return round(time.monotonic() - since, 1)
        time.sleep(0.2)
    return None


def _tasks_received(log: str, *, after: float, until: str) -> list[str]:
    """The "Task … received" lines logged after the wall-clock time `after` and before
    the first line containing `until` that follows it."""
    received: list[str] = []
    for line in log.splitlines():
        try:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue  # a traceback's line
        if stamp <= after:
            continue
        if until in line:
            return received
        if line.endswith("] received"):
            received.append(line)
    raise AssertionError(f"no {until!r} in the log")


def _beats_after(fault: Fault, name: str, moment: float, limit: float) -> float | None:
    """Seconds after `moment` (monotonic) at which the worker `name` beat again."""
    worker_id = fault.worker_id(name)
    wall = time.time() - (time.monotonic() - moment)
    deadline = moment + limit
    while time.monotonic() < deadline:
        with fault.stack.database.read_session() as session:
            beat = session.scalar(
                select(WorkerHeartbeat.heartbeat_at).where(WorkerHeartbeat.id == worker_id)
            )
        if beat is not None and beat.timestamp() > wall:
            return round(time.monotonic() - moment, 1)
        time.sleep(0.2)
    return None


def test_a_worker_cut_off_for_30_s_mid_burst_loses_and_doubles_nothing(
    partition_fault: tuple[Fault, Partition], unique: str
) -> None:
    fault, partition = partition_fault
    world = fault.world(unique)
    reader = world.user("reader")
    guids = fault.drafts(world, reader, SENDS)
    moments: dict[str, float] = {}
    once = threading.Lock()

    def heal() -> None:
        partition.heal()
        moments["healed"] = time.monotonic()

    def progress(n: int) -> None:
        with once:
            if n < SENDS // 3 or "cut" in moments:
                return
            partition.cut()
            moments["cut"], moments["cut_wall"] = time.monotonic(), time.time()
        threading.Timer(CUT_SECONDS, heal).start()

    try:
        responses = send_all(fault, world.token, guids, on_progress=progress)
        figures: dict[str, Any] = answered(fault, world.token, responses)
        sent_exactly_once(fault, world.sender, guids)
        emails_out(fault, guids, reader)
        figures["seconds_from_cut_to_all_delivered"] = round(time.monotonic() - moments["cut"], 1)
        # What the cut-off worker saw: its own timeouts ended what hung (a log line
        # within a bound of the shipped timeouts).
        figures["seconds_to_first_failed_heartbeat"] = _first_seen(
            fault, "cutoff", "heartbeat failed", moments["cut"], CUT_SECONDS
        )
        while "healed" not in moments:
            time.sleep(0.2)
    finally:
        partition.heal()
    healed = moments["healed"]
    figures["seconds_from_heal_to_heartbeat"] = _beats_after(fault, "cutoff", healed, 60)
    figures["seconds_from_heal_to_taking_tasks"] = _first_seen(
        fault, "cutoff", "heartbeat written again", healed, 60
    )
    taken_while_cut_off = _tasks_received(
        fault.stack.log("cutoff"), after=moments["cut_wall"], until="heartbeat written again"
    )
    # Everything final within 60 s of the heal, and nothing again from the woken worker.
    figures["duplicate_emails"] = emails_out(fault, guids, reader, timeout=60)
    sent_exactly_once(fault, world.sender, guids)
    fault.report("partition-30s", figures)
    assert figures["duplicate_emails"] == 0
    # PostgreSQL's TCP_USER_TIMEOUT (10 s) or connect timeout (5 s) ends a hung heartbeat.
    assert figures["seconds_to_first_failed_heartbeat"] is not None
    assert figures["seconds_to_first_failed_heartbeat"] <= 20
    assert figures["seconds_from_heal_to_heartbeat"] is not None
    assert figures["seconds_from_heal_to_taking_tasks"] is not None
    # It took no task from the cut until its heartbeat was written again (its event loop
    # waits on the cut Redis connection; the intake stops it before it takes any).
    assert "takes no new tasks" in fault.stack.log("cutoff")
    assert taken_while_cut_off == []
    assert fault.stack.processes["cutoff"].poll() is None  # it went on, not crashed
    # And it serves again: a send after the heal, whichever worker takes it, goes out.
    later_reader = world.user("later")
    after = fault.drafts(world, later_reader, 20)
    answered(fault, world.token, send_all(fault, world.token, after))
    assert emails_out(fault, after, later_reader, timeout=60) == 0

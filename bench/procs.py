"""What /proc says of a process and its descendants: the benchmark's CPU and memory
figures of the API, the workers and the reference endpoint."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        pending.extend(int(c) for c in children)
    return found


def status_kb(pid: int, key: str) -> int:
    """A /proc/<pid>/status figure in kB (VmRSS, VmHWM) summed over the process and its
    descendants; a process gone meanwhile counts nothing."""
    total = 0
    for current in process_tree(pid):
        try:
            lines = Path(f"/proc/{current}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in lines if line.startswith(f"{key}:")), 0)
    return total


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """CPU used by `pids` and by their children that have exited (a PostgreSQL backend
    whose connection closed is counted in the postmaster's cutime, not lost)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / _TICKS


def pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def settle(
    cpu_snapshot: Callable[[], dict[str, float]],
    *,
    idle_share: float = 0.1,
    timeout: float = 60.0,
) -> None:
    """Wait until what `cpu_snapshot` counts is idle: below `idle_share` of one core for
    two samples in a row (at most `timeout` seconds)."""
    interval, quiet = 0.3, 0
    deadline = time.monotonic() + timeout
    previous = sum(cpu_snapshot().values())
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(interval)
        current = sum(cpu_snapshot().values())
        quiet = quiet + 1 if current - previous < idle_share * interval else 0
        previous = current

"""Stacks that the fault tests may break: their own PostgreSQL database, their own Redis
(a server started for the run on its own port, or a database of the machine's), their own
SMTP sink, two workers, and short timeouts so recovery happens within seconds."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import (
    _create_postgres_database,
    _drop_postgres_database,
    _flush_redis,
    _unavailable,
    free_port,
)
from tests.smtp_sink import SmtpSink
from tests.support import Stack, StackConfig
from tests.worker.test_send_rules import World

FAST_RECOVERY_ENV = {
    "BROKER_VISIBILITY_TIMEOUT_SECONDS": "12",
    "SEND_TASK_TIME_LIMIT_SECONDS": "8",
    "MAIL_TASK_TIME_LIMIT_SECONDS": "10",
    "WORKER_SOFT_SHUTDOWN_SECONDS": "5",
    "SWEEP_INTERVAL_SECONDS": "2",
    "JOB_REPUBLISH_AFTER_SECONDS": "6",
    "MAX_SEND_ATTEMPTS": "5",
    "MAIL_RETRY_BASE_SECONDS": "0.5",
    "MAIL_RETRY_MAX_SECONDS": "2",
    "MAIL_MAX_ATTEMPTS": "8",
    "SEND_WAIT_SECONDS": "30",
}
REPORT_DIR = Path(os.environ.get("RELIABILITY_REPORT_DIR", "var/reliability"))


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, parents first."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        found.append(current)
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            queue.extend(int(c) for c in children)
    return found


class RedisServer:
    """A redis-server of the test's own, on its own port, that can be killed and started."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _unavailable("redis-server", FileNotFoundError("not on PATH"))
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.2).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@dataclass
class Fault:
    stack: Stack
    sink: SmtpSink

    def world(self, tag: str) -> World:
        world = World(self.stack, tag, limits={"dailyMessages": 5000, "maxRecipients": 50})
        return world.setup()

    def drafts(self, world: World, to: str, count: int) -> list[str]:
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda i: world.draft(to=[to], subject=f"m{i}"), range(count)))

    def wait_for_jobs(self, token: str, job_ids: list[str], timeout: float) -> dict[str, Any]:
        """Poll the jobs API until every job has finished; returns them by id."""
        deadline = time.monotonic() + timeout
        done: dict[str, Any] = {}
        with self.stack.client() as client:
            while len(done) < len(job_ids) and time.monotonic() < deadline:
                for job_id in job_ids:
                    if job_id in done:
                        continue
                    job = client.get(
                        f"/api/v1/jobs/{job_id}", headers={"x-sm-session-token": token}
                    ).json()
                    if job["status"] in ("succeeded", "failed"):
                        done[job_id] = job
                time.sleep(0.2)
        return done

    def kill_worker(self, name: str) -> None:
        """kill -9 the worker, its Celery process and its pool processes, as a lost host
        would."""
        for pid in descendants(self.stack.processes[name].pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop_worker(self, name: str) -> None:
        """SIGTERM to the worker's main process only, as `docker stop` or systemd do."""
        self.stack.processes[name].send_signal(signal.SIGTERM)

    def report(self, name: str, figures: dict[str, Any]) -> None:
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        (REPORT_DIR / f"{name}.json").write_text(json.dumps(figures, indent=2))
        print(f"\n{name}: {json.dumps(figures)}")


def _fault_stack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, sink: SmtpSink, name: str
) -> Iterator[Stack]:
    database_url = _create_postgres_database()
    try:
        config = StackConfig(
            name=name,
            database_url=database_url,
            redis_url=redis_url,
            env={**FAST_RECOVERY_ENV, "SMTP_URL": sink.url},
        )
        stack = Stack.start(
            config, var_dir=tmp_path_factory.mktemp(name), api_port=free_port(), workers=2
        )
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        _drop_postgres_database(database_url)


@pytest.fixture
def fault_sink() -> Iterator[SmtpSink]:
    with SmtpSink.running(free_port()) as sink:
        yield sink


@pytest.fixture
def worker_fault(tmp_path_factory: pytest.TempPathFactory, fault_sink: SmtpSink) -> Iterator[Fault]:
    """Two workers on the machine's Redis (a database of their own) that a test may kill."""
    url = "redis://127.0.0.1:6379/12"
    _flush_redis(url)
    try:
        for stack in _fault_stack(tmp_path_factory, url, fault_sink, "worker-fault"):
            yield Fault(stack, fault_sink)
    finally:
        _flush_redis(url)


@pytest.fixture
def redis_fault(
    tmp_path_factory: pytest.TempPathFactory, fault_sink: SmtpSink
) -> Iterator[tuple[Fault, RedisServer]]:
    """A stack on a Redis server of its own, which the test may kill and start again."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        for stack in _fault_stack(tmp_path_factory, server.url, fault_sink, "redis-fault"):
            yield Fault(stack, fault_sink), server
    finally:
        server.kill()


def send_all(
    fault: Fault, token: str, guids: list[str], *, on_progress: Any = None, concurrency: int = 16
) -> list[httpx.Response]:
    """SendMessage every draft from `concurrency` threads; `on_progress(n)` after each."""
    counter = {"n": 0}

    def send(guid: str) -> httpx.Response:
        with fault.stack.client() as client:
            response = client.put(
                f"/api/v1/messages/{guid}/send",
                json={},
                headers={"x-sm-session-token": token},
                timeout=60,
            )
        counter["n"] += 1
        if on_progress is not None:
            on_progress(counter["n"])
        return response

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(send, guids))

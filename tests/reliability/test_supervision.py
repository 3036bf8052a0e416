"""Processes: `securesend worker` starts Celery again when it dies on its own (as kombu can
make it do when Redis restarts), stops for good on SIGTERM, and takes Celery and its pool
with it when it is killed; `securesend up` and `securesend api --workers N` stop
everything they started on SIGTERM or SIGINT, and exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import World
from tests.reliability.conftest import descendants
from tests.support import MAIL_RETRY_ENV, Stack, StackConfig, free_port, wait_for_http


@pytest.fixture
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = StackConfig(name="supervised", database_url="", redis_url="", env=MAIL_RETRY_ENV)
    stack = Stack.start(config, var_dir=tmp_path_factory.mktemp("supervised"), api_port=free_port())
    try:
        yield stack
    finally:
        stack.stop()


def _celery_pid(supervisor: int) -> int:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_a_dead_celery_worker_is_started_again(embedded: Stack, unique: str) -> None:
    supervisor = embedded.processes["worker"]
    first = _celery_pid(supervisor.pid)

    pool = descendants(first)[1:]
    os.kill(first, signal.SIGKILL)  # the Celery main process dies; its supervisor does not
    deadline = time.monotonic() + 30
    while embedded.log("worker").count("ready.") < 2:
        assert time.monotonic() < deadline, embedded.log("worker")[-3000:]
        time.sleep(0.2)

    assert supervisor.poll() is None
    assert _celery_pid(supervisor.pid) != first
    assert pool and not any(Path(f"/proc/{pid}").exists() for pid in pool)  # cleared away
    assert "starting it again" in embedded.log("worker")
    world = World(embedded, unique).setup()
    assert world.send(world.draft(to=[world.user("r")])).status_code == 200

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0  # SIGTERM: a warm shutdown, and no restart


def _gone_within(pids: list[int], seconds: float) -> float:
    """Seconds until none of `pids` runs any more (zombies count as gone)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        alive = [pid for pid in pids if _running(pid)]
        if not alive:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"still running after {seconds}s: {alive}")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_the_supervisor_takes_celery_and_its_pool_with_it(embedded: Stack) -> None:
    """What a process manager does after a stop timeout, or the OOM killer: the Celery
    worker and its pool must not live on as orphans, consuming beside the next one."""
    supervisor = embedded.processes["worker"]
    below = descendants(supervisor.pid)[1:]
    assert len(below) >= 3  # Celery and its two pool processes
    os.kill(supervisor.pid, signal.SIGKILL)
    took = _gone_within(below, 5)
    print(f"\nCelery and its pool exited {took:.1f}s after kill -9 of the supervisor")


def _kill_if_running(process: subprocess.Popen[bytes]) -> None:
    """A test that failed must not leave its processes behind."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _serve(args: list[str], *, var_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VAR_DIR": str(var_dir), "DATABASE_URL": "", "REDIS_URL": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", *args, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_http(f"http://127.0.0.1:{port}/api/v1/public/ping", process)
    return process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_up_stops_everything_it_started(tmp_path: Path, signum: signal.Signals) -> None:
    up = _serve(["up"], var_dir=tmp_path, port=free_port())
    try:
        deadline = time.monotonic() + 60
        while len(descendants(up.pid)) < 6:  # api, worker, Celery and its pool of 2
            assert time.monotonic() < deadline, descendants(up.pid)
            time.sleep(0.2)
        below = descendants(up.pid)[1:]
        up.send_signal(signum)
        assert up.wait(60) == 0
        took = _gone_within(below, 5)
    finally:
        _kill_if_running(up)
    print(f"\nup and the {len(below)} processes it started stopped; the last {took:.1f}s after")


def test_sigterm_to_api_with_workers_stops_them_all(tmp_path: Path) -> None:
    api = _serve(["api", "--workers", "2"], var_dir=tmp_path, port=free_port())
    try:
        below = descendants(api.pid)[1:]
        assert len(below) >= 2
        api.send_signal(signal.SIGTERM)
        assert api.wait(30) == 0
        _gone_within(below, 5)
    finally:
        _kill_if_running(api)

"""`securesend worker` starts Celery again when it dies on its own (as kombu can make it do
when Redis restarts), and stops for good on SIGTERM."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MAIL_RETRY_ENV, free_port
from tests.reliability.conftest import descendants
from tests.support import Stack, StackConfig
from tests.worker.test_send_rules import World


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

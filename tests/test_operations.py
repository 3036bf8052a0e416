"""Running securesend as a service: Flower, the compose file, enqueueing from another
service, and the 202 a slow send answers."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select

from tests.factories import World
from tests.support import MAIL_RETRY_ENV, Stack, StackConfig, free_port, wait_for_http
from worker.celery_factory import create_app
from worker.cli import build_parser
from worker.models import User, new_guid
from worker.payloads import published_schemas
from worker.queues import PING_TASK, SEND_QUEUE
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SENTINEL_PASSWORD = "flower-sentinel-pw-8c1f"


def _sender_guid(stack: Stack, email: str) -> str:
    with stack.database.read_session() as session:
        return str(session.scalars(select(User.guid).where(User.email == email)).one())


@pytest.fixture
def flower(postgres_stack: Stack) -> Iterator[str]:
    port = free_port()
    env = {**postgres_stack.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/api/workers", process)
        _wait_until_flower_sees_tasks(postgres_stack, url)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _wait_until_flower_sees_tasks(stack: Stack, flower: str, timeout: float = 30) -> None:
    """Workers send task events only once a monitor asks (worker/celery_factory.py):
    wait until Flower has turned them on by itself, as it does every 5 s, and shows a
    no-op task."""
    publisher = create_app(stack.settings, results=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task_id = new_guid()
        publisher.send_task(PING_TASK, task_id=task_id, queue=SEND_QUEUE)
        time.sleep(0.5)
        if httpx.get(f"{flower}/api/task/info/{task_id}", timeout=5).status_code == 200:
            return
    raise AssertionError(f"Flower saw no task event in {timeout}s: it did not enable events")


def test_flower_shows_a_finished_send_with_redacted_arguments(
    postgres_stack: Stack, flower: str, unique: str
) -> None:
    world = World(postgres_stack, unique).setup()
    subject = f"Merger plans {unique}"
    guid = world.draft(
        to=[world.user("r")], subject=subject, messageOptions={"fyeoType": "UniquePassword"}
    )
    with postgres_stack.client() as client:
        accepted = client.put(
            f"/api/v1/messages/{guid}/send",
            json={"password": SENTINEL_PASSWORD, "craCode": "cra-sentinel-77"},
            headers={"x-sm-session-token": world.token, "prefer": "respond-async"},
        )
    job_id = accepted.json()["jobId"]

    deadline = time.monotonic() + 30
    task: dict[str, object] = {}
    while time.monotonic() < deadline:
        task = httpx.get(f"{flower}/api/task/info/{job_id}", timeout=5).json()
        if task.get("state") == "SUCCESS":
            break
        time.sleep(0.2)
    assert task.get("state") == "SUCCESS", task
    assert task["name"] == "securesend.send_message"
    assert task["args"] == f"SendJobV1(job={job_id}, message={guid})"
    assert str(task["result"]).startswith("{'httpStatus': 200")  # the status, no content
    shown = json.dumps(httpx.get(f"{flower}/api/tasks", timeout=5).json())
    for secret in (SENTINEL_PASSWORD, "cra-sentinel-77", "sealedSecrets", subject):
        assert secret not in shown


def test_the_enqueue_example_works_against_a_running_worker(
    postgres_stack: Stack, unique: str
) -> None:
    world = World(postgres_stack, unique).setup()
    guid = world.draft(to=[world.user("r")])
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "docs" / "examples" / "enqueue_send.py"),
            _sender_guid(postgres_stack, world.sender),
            guid,
        ],
        env=postgres_stack.env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["httpStatus"] == 200 and answer["response"]["notificationSent"] is True
    assert world.send(guid).json() == answer["response"]


def test_the_published_json_schema_is_the_one_the_worker_validates() -> None:
    published = json.loads((ROOT / "docs" / "send-job-v1.schema.json").read_text())
    assert published == json.loads(json.dumps(published_schemas()))


@pytest.fixture(scope="module")
def impatient_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The embedded default with SEND_WAIT_SECONDS=0: every send outlives its wait."""
    config = StackConfig(
        name="impatient",
        database_url="",
        redis_url="",
        env={**MAIL_RETRY_ENV, "SEND_WAIT_SECONDS": "0"},
    )
    stack = Stack.start(config, var_dir=tmp_path_factory.mktemp("impatient"), api_port=free_port())
    try:
        yield stack
    finally:
        stack.stop()


def test_a_send_that_outlives_the_wait_answers_202_and_finishes(
    impatient_stack: Stack, unique: str
) -> None:
    world = World(impatient_stack, unique).setup()
    guid = world.draft(to=[world.user("r")])
    response = world.send(guid)
    assert response.status_code == 202
    job_id = response.json()["jobId"]
    assert response.headers["location"] == f"/api/v1/jobs/{job_id}"
    deadline = time.monotonic() + 20
    with impatient_stack.client() as client:
        while True:
            job = client.get(
                response.headers["location"], headers={"x-sm-session-token": world.token}
            ).json()
            if job["status"] == "succeeded" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert job["status"] == "succeeded" and job["httpStatus"] == 200
    assert job["response"]["notificationSent"] is True


def _compose() -> dict[str, object]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text()))


def test_compose_services_run_commands_that_work_here() -> None:
    services = _compose()["services"]
    assert isinstance(services, dict)
    assert {"postgres", "redis", "api", "worker", "flower", "mailcatcher"} <= set(services)
    built = {name: s for name, s in services.items() if "build" in s}
    for name, service in built.items():
        command = service["command"]
        if command[0] == "securesend":
            build_parser().parse_args(command[1:])  # exits on a bad command line
        else:
            assert command[:3] == ["celery", "-A", "worker.celery_app"], name
            help_run = subprocess.run(
                [sys.executable, "-m", *command, "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert help_run.returncode == 0, help_run.stderr
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services
            assert condition["condition"] in (
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            )
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency


def test_compose_environment_names_real_settings_and_scales_workers() -> None:
    compose = _compose()
    env = compose["x-securesend-env"]
    assert isinstance(env, dict)
    known = {name.upper() for name in Settings.model_fields} | {"LOG_FORMAT"}
    assert set(env) <= known
    services = compose["services"]
    assert isinstance(services, dict)
    worker = services["worker"]
    assert "ports" not in worker and "container_name" not in worker  # --scale worker=N
    health = " ".join(shlex.quote(p) for p in services["api"]["healthcheck"]["test"])
    assert "/readyz" in health

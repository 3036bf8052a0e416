"""Operations endpoints: /healthz, /readyz, /metrics; and the logs carry ids and codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.factories import World
from tests.support import Stack, free_port, wait_for_http


def test_health_and_readiness(stack: Stack) -> None:
    with stack.client() as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_readiness_names_what_is_down(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/securesend_no_such_db",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
    }
    api = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", api)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
    finally:
        api.terminate()
        api.wait(10)
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["database"].startswith("unavailable: ")
    assert checks["broker"].startswith("unavailable: ")


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_count_sends_by_code_and_the_outbox(postgres_stack: Stack, unique: str) -> None:
    world = World(postgres_stack, unique).setup()
    with postgres_stack.client() as client:
        before = client.get("/metrics").text
    ok_before = _metric(before, 'securesend_sends_total{code="OK"}')
    missing_before = _metric(before, 'securesend_sends_total{code="929"}')
    interactive_wait = 'securesend_queue_wait_seconds_count{lane="interactive",queue="send"}'
    waits_before = _metric(before, interactive_wait)

    assert world.send(world.draft(to=[world.user("r")])).status_code == 200
    assert world.send("f" * 32).status_code == 404

    with postgres_stack.client() as client:
        response = client.get("/metrics")
    text = response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert _metric(text, 'securesend_sends_total{code="OK"}') == ok_before + 1
    assert _metric(text, 'securesend_sends_total{code="929"}') == missing_before + 1
    # Both sends waited in the interactive lane's queue (the unknown message's job too);
    # the histogram's buckets are cumulative and end in +Inf = _count.
    waits = _metric(text, interactive_wait)
    assert waits >= waits_before + 2
    assert (
        _metric(
            text, 'securesend_queue_wait_seconds_bucket{lane="interactive",le="+Inf",queue="send"}'
        )
        == waits
    )
    assert "# TYPE securesend_queue_wait_seconds histogram" in text
    for name in (
        'securesend_outbox_emails{status="queued"}',
        'securesend_outbox_emails{status="sent"}',
        'securesend_queue_wait_seconds_bucket{lane="bulk",le="0.01",queue="send"}',
        'securesend_queue_wait_seconds_bucket{lane="interactive",le="2.0",queue="send"}',
        'securesend_queue_wait_seconds_sum{lane="interactive",queue="mail"}',
        'securesend_queue_wait_seconds_count{lane="bulk",queue="mail"}',
        'securesend_broker_queue_length{queue="securesend.send"}',
        'securesend_broker_queue_length{queue="securesend.send.interactive"}',
        "securesend_email_retries_total",
        "securesend_email_failures_total",
        "securesend_jobs_unfinished",
    ):
        assert any(line.startswith(name + " ") for line in text.splitlines()), name


def test_worker_logs_are_json_with_job_guid_and_code(postgres_stack: Stack, unique: str) -> None:
    world = World(postgres_stack, unique).setup()
    guid = world.draft(to=[world.user("r")])
    with postgres_stack.client() as client:
        accepted = client.put(
            f"/api/v1/messages/{guid}/send",
            json={},
            headers={"x-sm-session-token": world.token, "prefer": "respond-async"},
        )
    job_id = accepted.json()["jobId"]

    def entry() -> dict[str, object] | None:
        for line in postgres_stack.log("worker").splitlines():
            if job_id in line and line.startswith("{"):
                record = json.loads(line)
                if record.get("code"):
                    return dict(record)
        return None

    deadline = time.monotonic() + 20
    while (record := entry()) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert record is not None, "no JSON log line for the job"
    assert record["job_id"] == job_id and record["message_guid"] == guid
    assert record["code"] == "OK" and record["http_status"] == 200
    assert record["task_id"] == job_id and record["level"] == "INFO"

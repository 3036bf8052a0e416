"""`broker.publish_on_redis` writes the message Celery's `send_task` writes (the API
publishes every send with it; every send test on Redis has a live worker run one)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.support import REDIS_TEST_URL, unavailable
from worker import broker
from worker.celery_factory import create_app
from worker.models import new_guid
from worker.queues import SEND_TASK
from worker.settings import Settings

# Differ by nature between two publishes: a new delivery tag each time; the publishing
# app's id (the RPC result backend's reply queue, unused with Redis results).
PER_PUBLISH = {"delivery_tag", "reply_to"}


@pytest.fixture
def queue() -> Iterator[tuple[redis.Redis, str]]:
    """A queue of its own on the tests' Redis, which no worker consumes."""
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as e:
        unavailable("Redis at " + REDIS_TEST_URL, e)
    name = f"test-broker-{new_guid()}"
    try:
        yield client, name
    finally:
        client.delete(name)
        client.close()


def _published(client: redis.Redis, queue: str) -> dict[str, Any]:
    raw = client.rpop(queue)
    assert isinstance(raw, bytes)
    message: dict[str, Any] = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def test_a_task_published_on_redis_is_the_message_celery_publishes(
    queue: tuple[redis.Redis, str],
) -> None:
    client, name = queue
    celery = create_app(Settings(redis_url=REDIS_TEST_URL), results=False)
    options = {"task_id": new_guid(), "queue": name, "argsrepr": "job", "kwargsrepr": "{}"}
    payload = {"v": 1, "jobId": options["task_id"], "formats": ["Text", "Html"], "n": None}

    celery.send_task(SEND_TASK, args=[payload], **options)
    broker.publish_on_redis(client, SEND_TASK, args=[payload], **options)
    by_celery, by_us = _published(client, name), _published(client, name)

    assert by_us["body"] == by_celery["body"] == [[payload], {}, by_celery["body"][2]]
    assert by_us["headers"] == by_celery["headers"]
    assert by_us["headers"]["id"] == options["task_id"]
    ours, celerys = by_us.pop("properties"), by_celery.pop("properties")
    assert {k: v for k, v in ours.items() if k not in PER_PUBLISH} == {
        # kombu also copies argsrepr and kwargsrepr into the properties; nothing reads them.
        k: v
        for k, v in celerys.items()
        if k not in PER_PUBLISH | {"argsrepr", "kwargsrepr"}
    }
    assert ours["delivery_tag"] != celerys["delivery_tag"]
    assert by_us == by_celery  # the envelope's other fields: encoding, content type

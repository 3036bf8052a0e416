"""What the broker holds, for recovery (worker.lifeline and the jobs sweep): the messages
waiting in a queue, and on Redis those delivered to a worker and not yet acknowledged.

kombu's Redis transport keeps each delivered message in the hash `unacked` (with its
delivery time in the sorted set `unacked_index`) until it is acknowledged, and gives it
back to its queue only after the visibility timeout (300 s). A message there that no live
worker holds was delivered to a dead one; `restore` gives it back at once, in the same
Redis transaction kombu uses, so that two workers restoring it restore it once.

It also publishes a task the way Celery's `send_task` does on Redis, without kombu's
publishing machinery (`publish_on_redis`): the API does it for every send.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.utils.nodenames import anon_nodename

from worker.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivered:
    """A message delivered to some worker and not acknowledged yet (Redis only)."""

    tag: str
    task_id: str
    task_name: str
    delivered_at: float  # Unix time
    eta: float | None  # a task to run later (a countdown) waits in its worker until then


# The third part of a Celery protocol 2 body: a task without callbacks, chain or chord.
_NO_WORKFLOW = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def publish_on_redis(
    client: redis.Redis,
    task: str,
    *,
    args: list[Any],
    task_id: str,
    queue: str,
    argsrepr: str,
    kwargsrepr: str,
) -> None:
    """Publish `task(*args)` to `queue` as `Celery.send_task` does on a Redis broker: the
    same message (Celery's protocol 2 headers and body in kombu's JSON envelope, the body
    in base64), pushed on the queue's list in one LPUSH. kombu's producer, its retry
    wrapper and Celery's option handling cost ~0.3 ms of CPU per publish on top of that
    push (docs/performance.md); `tests/worker/test_broker.py` checks that the two messages
    agree. Raises what redis-py raises when Redis cannot be reached."""
    body = json.dumps([args, {}, _NO_WORKFLOW]).encode()
    message = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": argsrepr,
            "kwargsrepr": kwargsrepr,
            "origin": anon_nodename(),
            "ignore_result": None,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,  # persistent
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,  # kombu's list for priority 0 is the queue's own name
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    client.lpush(queue, json.dumps(message))


def _uses_redis(app: Celery) -> bool:
    return str(app.conf.broker_url).startswith(("redis://", "rediss://", "sentinel://"))


@contextmanager
def _channel(app: Celery) -> Iterator[Any]:
    with app.connection_for_write() as connection:
        yield connection.default_channel


def headers_of(raw: bytes | str) -> dict[str, Any]:
    """The Celery headers (`id`, `task`, `eta` …) of a message as Redis keeps it."""
    message = json.loads(raw)
    if isinstance(message, list):  # an unacked entry: [message, exchange, routing key]
        message = message[0]
    headers = message.get("headers") or {}
    return headers if isinstance(headers, dict) else {}


def _eta(headers: dict[str, Any]) -> float | None:
    eta = headers.get("eta")
    return datetime.fromisoformat(eta).timestamp() if isinstance(eta, str) else None


def delivered(app: Celery) -> list[Delivered]:
    """Every unacknowledged message; [] on a broker without such a set."""
    if not _uses_redis(app):
        return []
    found = []
    with _channel(app) as channel:
        client = channel.client
        for tag, at in client.zrange(channel.unacked_index_key, 0, -1, withscores=True):
            raw = client.hget(channel.unacked_key, tag)
            if raw is None:
                continue  # acknowledged meanwhile
            headers = headers_of(raw)
            found.append(
                Delivered(
                    tag=tag.decode() if isinstance(tag, bytes) else str(tag),
                    task_id=str(headers.get("id")),
                    task_name=str(headers.get("task")),
                    delivered_at=float(at),
                    eta=_eta(headers),
                )
            )
    return found


def restore(app: Celery, tags: Iterable[str]) -> list[str]:
    """Give these unacknowledged messages back to their queues (marked redelivered), as
    kombu's `restore_by_tag` does, in a transaction watching the unacked set: a message
    acknowledged or restored meanwhile is left alone. Returns the tags this call
    restored (two callers restoring the same message: one of them)."""
    restored = []
    with _channel(app) as channel:
        qos = channel.qos
        for tag in tags:
            found: list[bool] = []

            def give_back(pipe: Any, tag: str = tag, found: list[bool] = found) -> None:
                raw = pipe.hget(qos.unacked_key, tag)
                pipe.multi()
                qos._remove_from_indices(tag, pipe)
                found[:] = [raw is not None]
                if raw is not None:
                    message, exchange, routing_key = json.loads(raw)
                    channel._do_restore_message(message, exchange, routing_key, pipe)

            channel.client.transaction(give_back, qos.unacked_key)
            if found == [True]:
                restored.append(tag)
    return restored


SCAN_CHUNK = 500


def waiting(app: Celery, settings: Settings, queue: str, task_ids: set[str]) -> set[str]:
    """Which of `task_ids` wait in `queue`. On Redis the queue is read from its oldest end
    (where the oldest jobs, those asked about, wait) a chunk at a time, until all are
    found: a backlog of thousands is not read whole."""
    if not task_ids:
        return set()
    if not _uses_redis(app):
        return task_ids & _queued_in_folder(settings.embedded_broker_dir, queue)
    found: set[str] = set()
    with _channel(app) as channel:
        end = -1
        while found != task_ids:
            chunk = channel.client.lrange(queue, end - SCAN_CHUNK + 1, end)
            found |= {str(headers_of(raw).get("id")) for raw in chunk} & task_ids
            if len(chunk) < SCAN_CHUNK:
                break
            end -= SCAN_CHUNK
    return found


def _queued_in_folder(folder: Path, queue: str) -> set[str]:
    """The embedded broker's messages: a file each, named `<ms>_<uuid>.<queue>.msg`."""
    ids = set()
    for path in folder.glob(f"*.{queue}.msg"):
        try:
            ids.add(str(headers_of(path.read_bytes()).get("id")))
        except (OSError, ValueError):
            continue  # taken by a worker meanwhile
    return ids

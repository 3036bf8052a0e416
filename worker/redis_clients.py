"""Every Redis client securesend opens itself (Celery's own are configured in
worker.celery_factory): from `REDIS_URL`, a plain server or the master that Sentinel
names (`REDIS_URL=sentinel://h1:26379/0;sentinel://h2:26379/0`, REDIS_SENTINEL_MASTER).
Behind Sentinel a client asks the sentinels for the master whenever it (re)connects, so
after a failover every process follows the new master without a restart: a command on
the old connection fails, and the next one goes to the master the sentinels name."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from worker.settings import Settings

# The sentinels are asked with these: a sentinel down is skipped within a second.
SENTINEL_SOCKET_TIMEOUT = 1.0


def sentinel_parts(redis_url: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """The sentinels' (host, port)s, the database and the master's password of a
    `sentinel://…;sentinel://…` URL."""
    hosts, db, password = [], 0, None
    for chunk in redis_url.split(";"):
        parts = urlsplit(chunk.strip())
        hosts.append((parts.hostname or "127.0.0.1", parts.port or 26379))
        if parts.path.strip("/"):
            db = int(parts.path.strip("/"))
        if parts.password and password is None:
            password = unquote(parts.password)
    return hosts, db, password


def sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """How the sentinels themselves are reached (their password, a short timeout)."""
    found: dict[str, Any] = {"socket_timeout": SENTINEL_SOCKET_TIMEOUT}
    if settings.redis_sentinel_password:
        found["password"] = settings.redis_sentinel_password
    return found


def _master(settings: Settings, sentinel_class: Any, options: dict[str, Any]) -> Any:
    """The client of the master REDIS_URL's sentinels name, through `sentinel_class`
    (redis-py's, or its asyncio twin)."""
    hosts, db, password = sentinel_parts(settings.redis_url)
    sentinel = sentinel_class(hosts, sentinel_kwargs=sentinel_kwargs(settings))
    return sentinel.master_for(settings.redis_sentinel_master, db=db, password=password, **options)


def redis_client(settings: Settings, **options: Any) -> redis.Redis:
    """A client of REDIS_URL's server, or of the master behind its sentinels."""
    if not settings.uses_sentinel:
        return redis.Redis.from_url(settings.redis_url, **options)
    master: redis.Redis = _master(settings, Sentinel, options)
    return master


def async_redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """`redis_client` for asyncio (the API's result listener)."""
    if not settings.uses_sentinel:
        return aioredis.Redis.from_url(settings.redis_url, **options)
    master: aioredis.Redis = _master(settings, AsyncSentinel, options)
    return master

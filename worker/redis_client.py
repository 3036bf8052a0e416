"""The Redis client securesend uses directly (outside Celery): one per URL and process."""

from __future__ import annotations

from functools import lru_cache

import redis


@lru_cache(maxsize=4)
def redis_client(url: str) -> redis.Redis:
    """A client with short timeouts, so a Redis outage fails fast instead of hanging."""
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

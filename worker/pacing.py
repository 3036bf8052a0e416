"""Where the pace is shared (worker.domain.pace.PaceStore): in Redis for a cluster, each
rule one Lua script (atomic, one round trip, Redis's clock for every worker); on one
machine without Redis (the embedded default), in a JSON file under `VAR_DIR` changed
under an exclusive `flock`. The rules are worker.domain.pace's; the scripts here are
those functions in Lua, and tests/worker/test_pace.py runs the same cases on both stores.

No library: `limits` has windows only, and the `[redis]` extras of `limits` and
`throttled-py` pin redis<8 (this project runs redis-py 8); none keeps a pace that a
throttled relay lowers for every worker, nor a breaker.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis

from worker.domain import pace
from worker.domain.pace import (
    KeyState,
    PaceSnapshot,
    PaceStore,
    PaceStoreUnavailable,
    RelayState,
)
from worker.settings import Settings

# Under it, a hash per key ("<prefix>relay:0": tat, pace, step, cut; failures and
# open_until for a relay's breaker), "<prefix>throttled" (a sorted set: key → when its
# pace was last cut) and "<prefix>counts" (a hash: "<key>:<event>" → count).
PREFIX = "securesend:pace:"

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

# pace.take: KEYS the keys' hashes; ARGV[1] the memory in seconds, then one limit per key.
_TAKE = (
    _NOW
    + """
local st, wait, latest = {}, 0, -1
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'tat', 'pace', 'step')
  local s = {tat = tonumber(v[1]) or 0, pace = tonumber(v[2]) or 0,
             step = tonumber(v[3]) or 0, limit = tonumber(ARGV[i + 1])}
  s.rate = s.limit
  if s.pace > 0 and (s.limit == 0 or s.pace < s.limit) then s.rate = s.pace end
  st[i] = s
  if s.rate > 0 and s.tat - now > wait then wait, latest = s.tat - now, i - 1 end
end
if latest >= 0 then return {tostring(wait), latest} end
for i = 1, #KEYS do
  local s = st[i]
  if s.rate > 0 then
    s.tat = math.max(s.tat, now) + 1 / s.rate
    if s.pace > 0 then
      s.pace = s.pace + s.step / s.pace
      if s.limit > 0 and s.pace >= s.limit then s.pace, s.step = 0, 0 end
    end
    redis.call('HSET', KEYS[i], 'tat', tostring(s.tat), 'pace', tostring(s.pace),
               'step', tostring(s.step))
    redis.call('EXPIRE', KEYS[i], ARGV[1])
  end
end
return {'0', -1}
"""
)

# pace.slow_down: KEYS[1] the key's hash, KEYS[2] THROTTLED; ARGV limit, observed, the
# key's name, then FLOOR, RECOVERY, CUT_GAP, the memory and MIN_STEP.
_SLOW_DOWN = (
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 'tat', 'pace', 'cut')
local tat, p, cut = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
local limit, observed = tonumber(ARGV[1]), tonumber(ARGV[2])
local floor, recovery = tonumber(ARGV[4]), tonumber(ARGV[5])
local gap, memory, min_step = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
if p > 0 and now - cut < gap then return tostring(p) end
local base = p
if base == 0 then base = limit end
if base == 0 then base = observed end
if base == 0 then base = 2 * floor end
p = math.max(floor, base / 2)
tat = math.max(tat, now) + 1 / p
redis.call('HSET', KEYS[1], 'tat', tostring(tat), 'pace', tostring(p),
           'step', tostring(math.max(p / recovery, min_step)), 'cut', tostring(now))
redis.call('EXPIRE', KEYS[1], memory)
redis.call('ZADD', KEYS[2], now, ARGV[3])
return tostring(p)
"""
)

# pace.relay_failed: KEYS[1] the relay's hash; ARGV OPEN_AFTER, OPEN_SECONDS.
_RELAY_FAILED = (
    _NOW
    + """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'open_until', tostring(now + tonumber(ARGV[2])))
end
return failures
"""
)

# pace.claim_probe: KEYS[1] the relay's hash; ARGV OPEN_AFTER, OPEN_SECONDS.
_CLAIM_PROBE = (
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 'failures', 'open_until')
if (tonumber(v[1]) or 0) >= tonumber(ARGV[1]) and (tonumber(v[2]) or 0) <= now then
  redis.call('HSET', KEYS[1], 'open_until', tostring(now + tonumber(ARGV[2])))
  return 1
end
return 0
"""
)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _shared(
    method: Callable[Concatenate[RedisPaceStore, _P], _R],
) -> Callable[Concatenate[RedisPaceStore, _P], _R]:
    """Redis's errors as the domain's `PaceStoreUnavailable` (Pacing goes on without it)."""

    def call(store: RedisPaceStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(store, *args, **kwargs)
        except redis.RedisError as e:
            raise PaceStoreUnavailable(f"Redis: {type(e).__name__}") from e

    return call


class RedisPaceStore:
    def __init__(self, client: redis.Redis, *, prefix: str = PREFIX) -> None:
        self._redis = client
        self._prefix = prefix
        self._throttled = prefix + "throttled"
        self._counts = prefix + "counts"
        self._take = client.register_script(_TAKE)
        self._slow_down = client.register_script(_SLOW_DOWN)
        self._relay_failed = client.register_script(_RELAY_FAILED)
        self._claim_probe = client.register_script(_CLAIM_PROBE)

    def _relay(self, relay: int) -> str:
        return self._prefix + pace.relay_key(relay)

    @_shared
    def take(self, keys: Sequence[str], limits: Sequence[float]) -> tuple[float, int]:
        wait, holder = self._take(
            keys=[self._prefix + k for k in keys], args=[pace.PACE_MEMORY_SECONDS, *limits]
        )
        return float(wait), int(holder)

    @_shared
    def slow_down(self, key: str, *, limit: float, observed: float) -> float:
        return float(
            self._slow_down(
                keys=[self._prefix + key, self._throttled],
                args=[
                    limit,
                    observed,
                    key,
                    pace.FLOOR_PER_SECOND,
                    pace.RECOVERY_SECONDS,
                    pace.CUT_GAP_SECONDS,
                    pace.PACE_MEMORY_SECONDS,
                    pace.MIN_STEP_PER_SECOND,
                ],
            )
        )

    @_shared
    def throttled_keys(self) -> frozenset[str]:
        since = time.time() - pace.PACE_MEMORY_SECONDS
        members: list[bytes] = self._redis.zrangebyscore(self._throttled, since, "+inf")  # type: ignore[assignment]
        return frozenset(k.decode() for k in members)

    @_shared
    def relays(self, count: int) -> list[RelayState]:
        pipe = self._redis.pipeline(transaction=False)
        for relay in range(count):
            pipe.hmget(self._relay(relay), "failures", "open_until")
        return [
            RelayState(int(failures or 0), float(open_until or 0))
            for failures, open_until in pipe.execute()
        ]

    @_shared
    def relay_failed(self, relay: int) -> None:
        self._relay_failed(keys=[self._relay(relay)], args=[pace.OPEN_AFTER, pace.OPEN_SECONDS])

    @_shared
    def relay_ok(self, relay: int) -> None:
        self._redis.hset(self._relay(relay), mapping={"failures": 0, "open_until": 0})

    @_shared
    def claim_probe(self, relay: int) -> bool:
        return bool(
            self._claim_probe(keys=[self._relay(relay)], args=[pace.OPEN_AFTER, pace.OPEN_SECONDS])
        )

    @_shared
    def count(self, counts: Mapping[str, int]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for name, value in counts.items():
            pipe.hincrby(self._counts, name, value)
        pipe.execute()

    @_shared
    def snapshot(self, relay_count: int) -> PaceSnapshot:
        stored: dict[bytes, bytes] = self._redis.hgetall(self._counts)  # type: ignore[assignment]
        counts = {k.decode(): int(v) for k, v in stored.items()}
        throttled = sorted(self.throttled_keys())
        pipe = self._redis.pipeline(transaction=False)
        for key in throttled:
            pipe.hget(self._prefix + key, "pace")
        paces = pipe.execute()
        return PaceSnapshot(
            counts=counts,
            paces={k: float(p) for k, p in zip(throttled, paces, strict=True) if p and float(p)},
            relays=self.relays(relay_count),
        )


class FilePaceStore:
    """One machine's workers share the pace through `<var>/pace.json`, read and written
    under an exclusive lock on `<var>/pace.lock` (a few tens of µs per email when a limit
    applies; nothing when none does)."""

    def __init__(self, folder: Path) -> None:
        self._path = folder / "pace.json"
        self._lock = folder / "pace.lock"

    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(self._path.read_text()) if self._path.exists() else {}
                before = json.dumps(state, sort_keys=True)
                yield state
                if json.dumps(state, sort_keys=True) != before:
                    fd, tmp = tempfile.mkstemp(dir=self._path.parent, suffix=".tmp")
                    with os.fdopen(fd, "w") as f:
                        json.dump(state, f)
                    os.replace(tmp, self._path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _keys(state: dict[str, Any]) -> dict[str, dict[str, float]]:
        now = time.time()
        keys: dict[str, dict[str, float]] = state.setdefault("keys", {})
        for name in [k for k, v in keys.items() if v.get("expires", now) < now]:
            del keys[name]
        return keys

    def take(self, keys: Sequence[str], limits: Sequence[float]) -> tuple[float, int]:
        with self._state() as state:
            stored = self._keys(state)
            states = [KeyState(**_fields(stored.get(k))) for k in keys]
            now = time.time()
            wait, holder = pace.take(states, limits, now)
            if holder < 0:
                for name, key_state in zip(keys, states, strict=True):
                    memory = now + pace.PACE_MEMORY_SECONDS
                    stored[name] = {**asdict(key_state), "expires": memory}
            return wait, holder

    def slow_down(self, key: str, *, limit: float, observed: float) -> float:
        with self._state() as state:
            stored = self._keys(state)
            key_state = KeyState(**_fields(stored.get(key)))
            now = time.time()
            new_pace = pace.slow_down(key_state, limit=limit, observed=observed, now=now)
            stored[key] = {**asdict(key_state), "expires": now + pace.PACE_MEMORY_SECONDS}
            state.setdefault("throttled", {})[key] = key_state.cut
            return new_pace

    @staticmethod
    def _throttled(state: dict[str, Any]) -> frozenset[str]:
        since = time.time() - pace.PACE_MEMORY_SECONDS
        return frozenset(k for k, cut in state.get("throttled", {}).items() if cut >= since)

    def throttled_keys(self) -> frozenset[str]:
        with self._state() as state:
            return self._throttled(state)

    def _relay_states(self, state: dict[str, Any]) -> dict[str, dict[str, float]]:
        relays: dict[str, dict[str, float]] = state.setdefault("relays", {})
        return relays

    def relays(self, count: int) -> list[RelayState]:
        with self._state() as state:
            return self._relays(state, count)

    def _relays(self, state: dict[str, Any], count: int) -> list[RelayState]:
        relays = self._relay_states(state)
        return [_relay_state(relays.get(str(i))) for i in range(count)]

    def _change_relay(self, relay: int, change: Any) -> Any:
        with self._state() as state:
            relays = self._relay_states(state)
            relay_state = _relay_state(relays.get(str(relay)))
            result = change(relay_state, time.time())
            relays[str(relay)] = asdict(relay_state)
            return result

    def relay_failed(self, relay: int) -> None:
        self._change_relay(relay, pace.relay_failed)

    def relay_ok(self, relay: int) -> None:
        self._change_relay(relay, lambda s, _now: pace.relay_ok(s))

    def claim_probe(self, relay: int) -> bool:
        return bool(self._change_relay(relay, pace.claim_probe))

    def count(self, counts: Mapping[str, int]) -> None:
        with self._state() as state:
            stored = state.setdefault("counts", {})
            for name, value in counts.items():
                stored[name] = stored.get(name, 0) + value

    def snapshot(self, relay_count: int) -> PaceSnapshot:
        with self._state() as state:
            keys = self._keys(state)
            return PaceSnapshot(
                counts=dict(state.get("counts", {})),
                paces={
                    k: keys[k]["pace"]
                    for k in self._throttled(state)
                    if keys.get(k, {}).get("pace")
                },
                relays=self._relays(state, relay_count),
            )


def _fields(stored: dict[str, float] | None) -> dict[str, float]:
    return {k: v for k, v in (stored or {}).items() if k != "expires"}


def _relay_state(stored: dict[str, float] | None) -> RelayState:
    stored = stored or {}
    return RelayState(int(stored.get("failures", 0)), float(stored.get("open_until", 0.0)))


def make_pace_store(settings: Settings, client: redis.Redis | None) -> PaceStore:
    """Redis when the cluster has it, else the file under `VAR_DIR`."""
    if client is not None:
        return RedisPaceStore(client)
    return FilePaceStore(settings.var_dir.resolve())

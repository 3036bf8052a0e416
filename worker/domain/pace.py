"""Delivering at the relay's pace (docs/design.md, "Pace"): the limits an operator sets,
the pace a throttling relay imposes, and which relay is up, all shared by every worker
through a `PaceStore` (worker/pacing.py: Redis, or a locked file on one machine).

Three things decide when an email may be handed over:

- **Limits.** `MAIL_RATE_LIMIT` (each relay) and `MAIL_DOMAIN_RATE_LIMITS` (each
  recipient domain named) as a GCRA with no burst: one email every `1/rate` seconds
  across the cluster, `RATE_MARGIN` below the rate set. An email that would wait is not
  an attempt: it is deferred with a due time (worker.domain.delivery).
- **Pace.** A reply that says "slow down" (`is_throttle`) halves the pace of the relay,
  or of the recipient's domain when that domain has a limit of its own, for every worker;
  each email let through then adds a little back (additive increase, multiplicative
  decrease), until the pace passes the limit and the limit alone applies again. Without
  a limit the pace starts from the rate this process saw the relay accept.
- **Relays.** `SMTP_URL` may list relays in order. `OPEN_AFTER` failures in a row
  (unreachable, or a 4xx that is not throttling) open a relay's breaker: every worker
  sends through the next one; after `OPEN_SECONDS` one worker probes the first again with
  a real email, and on success every worker returns to it.

The state is a few numbers per key (`KeyState`, `RelayState`) and the rules that change
it are the functions here; the Redis store runs the same rules in Lua, and the tests run
one set of cases against both stores. With no limit configured and no throttling seen,
a drain asks the store nothing per email (`Pacing.keys_for`).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

# Emails go one slot apart at this share of a configured rate: a relay counts arrivals,
# and the network's jitter (a new connection, a slow reply) moves two closer than the slot.
RATE_MARGIN = 0.95
# A relay's pace never drops below this (emails per second).
FLOOR_PER_SECOND = 0.2
# After a cut, the pace grows back by a tenth of the cut pace each second: from half to
# the rate that was throttled in ten seconds, as TCP's additive increase does per round
# trip; and by at least MIN_STEP a second, for a pace cut from a rate this process
# underestimated (without a limit, it starts from what one process saw accepted).
RECOVERY_SECONDS = 10.0
MIN_STEP_PER_SECOND = 1.0
# Throttle replies within this long of a cut are the same episode: one cut, not one per
# email that was already on its way.
CUT_GAP_SECONDS = 1.0
# A pace is forgotten this long after its last cut.
PACE_MEMORY_SECONDS = 600
# This many failures in a row open a relay's breaker; it is probed again after this long.
OPEN_AFTER = 3
OPEN_SECONDS = 30.0
# A drain sleeps for the relay's slots this long at most in all; past it, the rest of its
# batch is deferred and the drain ends, leaving its worker process to sends between slots
# (the next drain is asked for when the next email is due).
DRAIN_SLEEP_SECONDS = 1.0
# How often a process reads the shared state it caches (throttled keys, open breakers).
REFRESH_SECONDS = 1.0

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    count: float
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`25/s`, `1000/min`, `50000/day`, `10/5s` (ten every five seconds)."""
        match = _RATE.match(text.lower())
        unit = _UNITS.get(match.group(3)) if match else None
        if match is None or unit is None or float(match.group(1)) <= 0:
            raise ValueError(f"{text!r} is not a rate such as 25/s, 1000/min or 50000/day")
        return cls(float(match.group(1)), float(match.group(2) or 1) * unit)

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    def __str__(self) -> str:
        return f"{self.per_second:g}/s"


def parse_domain_limits(text: str) -> dict[str, Rate]:
    """`gmail.com=10/s,outlook.com=5/s` → {domain: rate}."""
    limits: dict[str, Rate] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        domain, equals, rate = item.partition("=")
        if not equals or not domain.strip():
            raise ValueError(f"{item!r} is not domain=rate (e.g. gmail.com=10/s)")
        limits[domain.strip().lower()] = Rate.parse(rate)
    return limits


_ENHANCED_THROTTLE = re.compile(r"\b4\.7\.\d{1,3}\b")
_THROTTLE_WORDS = re.compile(r"rate|throttl|too many|slow down", re.IGNORECASE)
THROTTLE_CODES = frozenset({421, 450, 451, 452, 454})


def is_throttle(code: int, text: str) -> bool:
    """A reply that asks the sender to slow down: 421/450/451/452/454 with an enhanced
    code 4.7.x, or saying "rate", "throttl", "too many" or "slow down"."""
    return code in THROTTLE_CODES and bool(
        _ENHANCED_THROTTLE.search(text) or _THROTTLE_WORDS.search(text)
    )


def relay_key(relay: int) -> str:
    return f"relay:{relay}"


def domain_key(domain: str) -> str:
    return f"domain:{domain}"


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


# --- The rules, on one key's state (the Redis store runs the same in Lua) -------------


@dataclass(slots=True)
class KeyState:
    tat: float = 0.0  # the theoretical arrival time of the next email (GCRA)
    pace: float = 0.0  # emails/s imposed by throttling; 0: none
    step: float = 0.0  # what the pace grows by each second
    cut: float = 0.0  # when the pace was last cut


def effective_rate(state: KeyState, limit: float) -> float:
    """Emails per second allowed now: the limit, or the pace if lower; 0 = no limit."""
    if state.pace and (not limit or state.pace < limit):
        return state.pace
    return limit


def take(states: Sequence[KeyState], limits: Sequence[float], now: float) -> tuple[float, int]:
    """Let one email through every key at once, or none: `(0.0, -1)` when it may go (each
    key's next slot is booked), else the seconds until it may and the key that holds it
    (the index of the latest)."""
    waits = [
        s.tat - now if effective_rate(s, limit) else 0.0
        for s, limit in zip(states, limits, strict=True)
    ]
    latest = max(range(len(waits)), key=waits.__getitem__, default=-1)
    if latest >= 0 and waits[latest] > 0:
        return waits[latest], latest
    for state, limit in zip(states, limits, strict=True):
        rate = effective_rate(state, limit)
        if not rate:
            continue
        state.tat = max(state.tat, now) + 1 / rate
        if state.pace:
            state.pace += state.step / state.pace
            if limit and state.pace >= limit:
                state.pace = state.step = 0.0
    return 0.0, -1


def slow_down(state: KeyState, *, limit: float, observed: float, now: float) -> float:
    """A throttle reply: halve the pace (once per episode); returns the new pace."""
    if state.pace and now - state.cut < CUT_GAP_SECONDS:
        return state.pace
    base = state.pace or limit or observed or 2 * FLOOR_PER_SECOND
    state.pace = max(FLOOR_PER_SECOND, base / 2)
    state.step = max(state.pace / RECOVERY_SECONDS, MIN_STEP_PER_SECOND)
    state.cut = now
    state.tat = max(state.tat, now) + 1 / state.pace
    return state.pace


@dataclass(slots=True)
class RelayState:
    failures: int = 0  # in a row
    open_until: float = 0.0

    @property
    def open(self) -> bool:
        return self.failures >= OPEN_AFTER


def relay_failed(state: RelayState, now: float) -> None:
    state.failures += 1
    if state.open:
        state.open_until = now + OPEN_SECONDS


def relay_ok(state: RelayState) -> None:
    state.failures, state.open_until = 0, 0.0


def claim_probe(state: RelayState, now: float) -> bool:
    """Whether this worker is the one to try an open relay again (its time has come and
    no other worker took the probe)."""
    if state.open and state.open_until <= now:
        state.open_until = now + OPEN_SECONDS
        return True
    return False


# --- The store, shared by every worker -------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaceSnapshot:
    """What /metrics shows: counters by `<key>:<event>`, the paces and the relays."""

    counts: Mapping[str, int]
    paces: Mapping[str, float]
    relays: Sequence[RelayState]


class PaceStoreUnavailable(Exception):
    """The shared store cannot be reached (Redis is down): `Pacing` goes on without it,
    letting emails through at the relay's own pace rather than holding them."""


class PaceStore(Protocol):
    def take(self, keys: Sequence[str], limits: Sequence[float]) -> tuple[float, int]: ...
    def slow_down(self, key: str, *, limit: float, observed: float) -> float: ...
    def throttled_keys(self) -> frozenset[str]: ...
    def relays(self, count: int) -> list[RelayState]: ...
    def relay_failed(self, relay: int) -> None: ...
    def relay_ok(self, relay: int) -> None: ...
    def claim_probe(self, relay: int) -> bool: ...
    def count(self, counts: Mapping[str, int]) -> None: ...
    def snapshot(self, relay_count: int) -> PaceSnapshot: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """What the operator configured (worker.settings)."""

    relay: Rate | None = None
    domains: Mapping[str, Rate] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float
    reason: str  # "relay" or "domain": a relay wait holds every email, a domain's one


# Local observations: this many recent acceptances per key give the rate a pace starts
# from when a relay without a limit first throttles.
_SEEN = 64
_SEEN_WINDOW = 1.0


class Pacing:
    """One process's view of the pace (a drain asks it before each email and tells it
    what became of it): its limits, a store shared by every worker, and what it caches
    of the store for `REFRESH_SECONDS` so that an unlimited relay costs no round trip."""

    def __init__(
        self,
        store: PaceStore,
        limits: Limits,
        *,
        relay_count: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.limits = limits
        self.relay_count = relay_count
        self._clock = clock
        self._refreshed_at = -REFRESH_SECONDS
        self._throttled: frozenset[str] = frozenset()
        self._relays = [RelayState() for _ in range(relay_count)]
        self._accepted: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=_SEEN))
        self._counts: Counter[str] = Counter()
        self._away_until = 0.0

    def _shared(self, call: Callable[[], _T]) -> _T | None:
        """`call` on the store; None while it cannot be reached. Then the process goes on
        with what it knows (its own breaker, emails unpaced) and asks again a
        `REFRESH_SECONDS` later, so that an outage costs one failed call a second."""
        if self._clock() < self._away_until:
            return None
        try:
            return call()
        except PaceStoreUnavailable as e:
            logger.warning("the shared pace is unavailable (%s): going on without it", e)
            self._away_until = self._clock() + REFRESH_SECONDS
            return None

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._refreshed_at < REFRESH_SECONDS:
            return
        self._refreshed_at = now
        throttled = self._shared(self.store.throttled_keys)
        if throttled is not None:
            self._throttled = throttled
        if self.relay_count > 1:
            relays = self._shared(lambda: self.store.relays(self.relay_count))
            self._relays = relays or self._relays

    def _limit(self, key: str) -> float:
        """The emails/s `key` is held to by configuration (`RATE_MARGIN` below what was
        set); 0: none."""
        if key.startswith("relay:"):
            rate = self.limits.relay
        else:
            rate = self.limits.domains.get(key.removeprefix("domain:"))
        return rate.per_second * RATE_MARGIN if rate else 0.0

    def _domain_key(self, recipient: str) -> str | None:
        domain = domain_of(recipient)
        return domain_key(domain) if domain in self.limits.domains else None

    # Which relay -----------------------------------------------------------------------

    def relay(self, *, tried: Sequence[int] = ()) -> int | None:
        """The relay to send through: the first whose breaker is closed, or an open one
        whose probe this process won; None when every relay was tried."""
        if self.relay_count == 1:
            return None if tried else 0
        self._refresh()
        for index, state in enumerate(self._relays):
            if index in tried:
                continue
            if not state.open or self._shared(partial(self.store.claim_probe, index)):
                return index
        untried = [i for i in range(self.relay_count) if i not in tried]
        return untried[0] if untried else None

    def relay_failed(self, relay: int) -> None:
        if self.relay_count > 1:
            relay_failed(self._relays[relay], self._clock())
            self._shared(lambda: self.store.relay_failed(relay))

    def relay_ok(self, relay: int) -> None:
        if self.relay_count > 1 and self._relays[relay].failures:
            relay_ok(self._relays[relay])
            self._shared(lambda: self.store.relay_ok(relay))

    # When --------------------------------------------------------------------------------

    def keys_for(self, relay: int, recipient: str) -> list[str]:
        """The keys an email to `recipient` through `relay` must pass: those with a limit,
        and those throttled lately; none (no round trip) when nothing limits it."""
        self._refresh()
        keys = [relay_key(relay)]
        domain = self._domain_key(recipient)
        if domain is not None:
            keys.append(domain)
        return [k for k in keys if self._limit(k) or k in self._throttled]

    def wait(self, relay: int, recipient: str) -> Wait | None:
        """None when the email may go now (its slots are booked); else how long it must
        wait, and for what."""
        keys = self.keys_for(relay, recipient)
        if not keys:
            return None
        taken = self._shared(lambda: self.store.take(keys, [self._limit(k) for k in keys]))
        if taken is None or taken[0] <= 0:
            return None
        seconds, holder = taken
        return Wait(seconds, keys[holder].partition(":")[0])

    def spacing(self, relay: int, recipient: str) -> float:
        """Seconds between two emails that wait on the same key as this one (to spread
        the due times of the emails a drain defers)."""
        rates = [self._rate_now(k) for k in (relay_key(relay), self._domain_key(recipient)) if k]
        slowest = min((r for r in rates if r), default=0.0)
        return 1 / slowest if slowest else 0.0

    def rates_now(self, paces: Mapping[str, float], relay_count: int) -> dict[str, float]:
        """Emails per second each relay and limited domain is held to, given the paces of
        the throttled keys (`PaceSnapshot.paces`); keys neither limited nor paced are
        absent."""
        keys = [relay_key(i) for i in range(relay_count)]
        keys += [domain_key(d) for d in self.limits.domains]
        rates = {}
        for key in dict.fromkeys([*keys, *paces]):
            rate = effective_rate(KeyState(pace=paces.get(key, 0.0)), self._limit(key))
            if rate:
                rates[key] = rate
        return rates

    def _rate_now(self, key: str) -> float:
        limit = self._limit(key)
        return limit or (self._observed(key) if key in self._throttled else 0.0)

    def accepted(self, relay: int, recipient: str) -> None:
        now = self._clock()
        self._accepted[relay_key(relay)].append(now)
        self._counts[f"{relay_key(relay)}:sent"] += 1
        domain = self._domain_key(recipient)
        if domain is not None:
            self._accepted[domain].append(now)
            self._counts[f"{domain}:sent"] += 1

    def throttled(self, relay: int, recipient: str) -> tuple[str, float]:
        """A throttle reply: slow the domain down if it has a limit of its own, else the
        relay; returns the key slowed and its new pace (emails/s)."""
        key = self._domain_key(recipient) or relay_key(relay)
        limit, observed = self._limit(key), self._observed(key)
        pace = self._shared(lambda: self.store.slow_down(key, limit=limit, observed=observed))
        if pace is None:  # slowed down alone, from what this process knows
            pace = max(FLOOR_PER_SECOND, (limit or observed) / 2)
        self._throttled |= {key}
        self._counts[f"{key}:throttled"] += 1
        return key, pace

    def key_holding(self, relay: int, recipient: str, wait: Wait) -> str:
        """The key whose pace a wait is for."""
        domain = self._domain_key(recipient)
        return domain if wait.reason == "domain" and domain else relay_key(relay)

    def deferred(self, relay: int, recipient: str, reason: str, count: int = 1) -> None:
        key = self.key_holding(relay, recipient, Wait(0.0, reason))
        self._counts[f"{key}:deferred"] += count

    def _observed(self, key: str) -> float:
        """The rate this process saw `key` accept over the last seconds."""
        now = self._clock()
        recent = [t for t in self._accepted[key] if now - t <= _SEEN_WINDOW]
        return len(recent) / _SEEN_WINDOW

    def flush(self) -> None:
        """Add what this process counted to the shared counters (once per batch)."""
        counts = self._counts

        def add() -> bool:
            self.store.count(counts)
            return True

        added = bool(counts) and self._shared(add)
        if added:
            self._counts = Counter()  # else counted again with the next batch's

"""The pace rules (worker.domain.pace) and the two stores that share them (worker.pacing):
the same cases run on Redis (its Lua scripts) and on the file of the embedded default.
Times are the store's own clock: the cases assert what a rule allows, never how long
something took."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from tests.support import free_port, redis_pace_store
from worker.domain import pace
from worker.domain.pace import (
    KeyState,
    Limits,
    PaceStore,
    Pacing,
    Rate,
    RelayState,
    is_throttle,
    parse_domain_limits,
)
from worker.pacing import FilePaceStore, RedisPaceStore
from worker.settings import Settings


@pytest.fixture(params=["redis", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Iterator[PaceStore]:
    """Each store; on Redis, under a prefix of the test's own (the live stacks of the
    session share that database)."""
    if request.param == "file":
        yield FilePaceStore(tmp_path)
        return
    with redis_pace_store(unique) as store:
        yield store


# --- what an operator writes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("25/s", 25.0), ("1000/min", 1000 / 60), ("14 / second", 14.0), ("10/5s", 2.0),
     ("50000/day", 50000 / 86400), ("0.5/s", 0.5)],
)  # fmt: skip
def test_rates_read_as_providers_state_them(text: str, per_second: float) -> None:
    assert Rate.parse(text).per_second == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["25", "fast", "0/s", "-1/s", "10/fortnight", "/s"])
def test_a_malformed_rate_is_refused_with_what_was_wrong(text: str) -> None:
    with pytest.raises(ValueError, match="is not a rate such as 25/s"):
        Rate.parse(text)


def test_domain_limits_and_relays_are_read_from_the_settings() -> None:
    assert parse_domain_limits(" Gmail.com=10/s, outlook.com=300/min ,") == {
        "gmail.com": Rate(10, 1),
        "outlook.com": Rate(300, 60),
    }
    settings = Settings(smtp_url="smtp://a:25, smtps://u:p@b:465", mail_rate_limit="14/s")
    assert settings.smtp_urls == ["smtp://a:25", "smtps://u:p@b:465"]
    assert settings.pace_limits.relay == Rate(14, 1)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mail_rate_limit": "lots"}, "is not a rate"),
        ({"mail_domain_rate_limits": "gmail.com:10/s"}, "is not domain=rate"),
        ({"smtp_url": "smtp://a:25,http://b"}, "is not smtp://"),
    ],
)
def test_settings_refuse_limits_they_cannot_read(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "text", "throttle"),
    [
        (454, "4.7.0 Throttling failure: Maximum sending rate exceeded.", True),
        (421, "4.7.28 Our system has detected an unusual rate of mail", True),
        (451, "4.7.500 Server busy. Please try again later", True),
        (450, "Too many messages, slow down", True),
        (452, "4.5.3 Too many recipients", True),
        (451, "4.3.0 Local error in processing", False),
        (421, "Service not available, closing transmission channel", False),
        (450, "4.2.0 Greylisted, come back later", False),
        (550, "5.7.1 rate limit policy: rejected", False),  # 5xx is never "later"
        (454, "4.7.0 TLS not available", True),
    ],
)
def test_throttle_replies_are_told_from_other_refusals(
    code: int, text: str, throttle: bool
) -> None:
    assert is_throttle(code, text) is throttle


# --- the rules, on their own clock ---------------------------------------------------------


def test_a_limit_lets_one_email_through_per_slot_and_no_burst() -> None:
    state = KeyState()
    assert pace.take([state], [10.0], now=100.0) == (0.0, -1)
    wait, holder = pace.take([state], [10.0], now=100.0)
    assert wait == pytest.approx(0.1) and holder == 0
    assert pace.take([state], [10.0], now=100.11) == (0.0, -1)
    # Idle time is not saved up: after a pause, still one per slot.
    assert pace.take([state], [10.0], now=200.0) == (0.0, -1)
    assert pace.take([state], [10.0], now=200.0)[0] == pytest.approx(0.1)


def test_an_email_goes_through_every_key_or_none() -> None:
    relay, domain = KeyState(), KeyState()
    assert pace.take([relay, domain], [100.0, 1.0], now=0.0) == (0.0, -1)
    wait, holder = pace.take([relay, domain], [100.0, 1.0], now=0.05)
    assert wait == pytest.approx(0.95) and holder == 1  # the domain holds it
    # The relay's slot was not spent on the email the domain held.
    assert relay.tat == pytest.approx(0.01)


def test_a_throttle_halves_the_pace_once_per_episode_and_it_grows_back_to_the_limit() -> None:
    state = KeyState()
    assert pace.slow_down(state, limit=20.0, observed=0.0, now=0.0) == 10.0
    # Replies to emails already on their way belong to the same episode.
    assert pace.slow_down(state, limit=20.0, observed=0.0, now=0.5) == 10.0
    assert pace.effective_rate(state, 20.0) == 10.0
    now, granted = 1.0, 0
    while state.pace:
        wait, _ = pace.take([state], [20.0], now=now)
        now += wait or 0.0
        granted += wait == 0
    # Additive increase: back at the limit after about RECOVERY_SECONDS of sending.
    assert 1.0 + pace.RECOVERY_SECONDS * 0.9 < now < 1.0 + pace.RECOVERY_SECONDS * 1.6, now
    assert pace.effective_rate(state, 20.0) == 20.0


def test_without_a_limit_the_pace_starts_from_what_the_relay_was_seen_to_accept() -> None:
    state = KeyState()
    assert pace.slow_down(state, limit=0.0, observed=30.0, now=0.0) == 15.0
    assert pace.slow_down(state, limit=0.0, observed=30.0, now=2.0) == 7.5
    assert pace.slow_down(KeyState(), limit=0.0, observed=0.0, now=0.0) == pace.FLOOR_PER_SECOND


def test_a_relay_opens_after_failures_in_a_row_and_one_worker_probes_it() -> None:
    relay = RelayState()
    for _ in range(pace.OPEN_AFTER - 1):
        pace.relay_failed(relay, now=0.0)
    assert not relay.open
    pace.relay_failed(relay, now=0.0)
    assert relay.open and not pace.claim_probe(relay, now=1.0)
    assert pace.claim_probe(relay, now=pace.OPEN_SECONDS)
    assert not pace.claim_probe(relay, now=pace.OPEN_SECONDS)  # one probe at a time
    pace.relay_ok(relay)
    assert relay == RelayState()


# --- the stores: the same rules, shared ---------------------------------------------------


def test_a_store_shares_one_limit_between_its_users(store: PaceStore) -> None:
    assert store.take(["relay:0"], [2.0]) == (0.0, -1)
    wait, holder = store.take(["relay:0"], [2.0])
    assert holder == 0 and 0.0 < wait <= 0.5
    assert store.take(["relay:1"], [2.0]) == (0.0, -1)  # another key, its own slots
    assert store.take(["relay:0"], [0.0]) == (0.0, -1)  # no limit: nothing holds it


def test_a_store_holds_an_email_for_its_domain_without_spending_the_relays_slot(
    store: PaceStore,
) -> None:
    assert store.take(["relay:0", "domain:slow.test"], [1000.0, 1.0]) == (0.0, -1)
    wait, holder = store.take(["relay:0", "domain:slow.test"], [1000.0, 1.0])
    assert holder == 1 and 0.9 < wait <= 1.0
    # The relay alone lets the next email through: one slot (1 ms) after the first.
    assert store.take(["relay:0"], [1000.0])[1] in (-1, 0)
    assert store.take(["relay:0"], [1000.0])[0] <= 0.002


def test_a_store_cuts_a_pace_for_everyone_and_remembers_the_key(store: PaceStore) -> None:
    assert store.throttled_keys() == frozenset()
    assert store.slow_down("relay:0", limit=0.0, observed=8.0) == 4.0
    assert store.slow_down("relay:0", limit=0.0, observed=8.0) == 4.0  # the same episode
    assert store.throttled_keys() == {"relay:0"}
    # An unlimited relay now has a pace: the next email waits a slot of 1/4 s.
    wait, holder = store.take(["relay:0"], [0.0])
    assert holder == 0 and 0.0 < wait <= 0.25
    assert store.snapshot(1).paces == {"relay:0": 4.0}


def test_a_store_shares_a_relays_breaker(store: PaceStore) -> None:
    assert store.relays(2) == [RelayState(), RelayState()]
    for _ in range(pace.OPEN_AFTER):
        store.relay_failed(1)
    first, second = store.relays(2)
    assert first == RelayState() and second.open and second.open_until > 0
    assert not store.claim_probe(1)  # its cool-down has not passed
    store.relay_ok(1)
    assert store.relays(2) == [RelayState(), RelayState()]


def test_a_store_adds_up_the_counts_of_every_worker(store: PaceStore) -> None:
    store.count({"relay:0:sent": 3, "relay:0:throttled": 1})
    store.count({"relay:0:sent": 2, "domain:slow.test:deferred": 4})
    assert store.snapshot(1).counts == {
        "relay:0:sent": 5,
        "relay:0:throttled": 1,
        "domain:slow.test:deferred": 4,
    }


# --- one process's view ----------------------------------------------------------------------


class _CountingStore(FilePaceStore):
    """A real file store that counts the calls a drain makes per email."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.takes = 0

    def take(self, keys: Sequence[str], limits: Sequence[float]) -> tuple[float, int]:
        self.takes += 1
        return super().take(keys, limits)


def test_with_nothing_limited_an_email_costs_no_call_to_the_store(tmp_path: Path) -> None:
    store = _CountingStore(tmp_path)
    pacing = Pacing(store, Limits(domains={"slow.test": Rate(1, 1)}))
    for _ in range(50):
        assert pacing.wait(0, "someone@fast.test") is None
    assert store.takes == 0
    assert pacing.wait(0, "someone@slow.test") is None
    assert pacing.wait(0, "other@slow.test") is not None
    assert store.takes == 2


def test_a_throttled_relay_paces_every_process_sharing_the_store(tmp_path: Path) -> None:
    first, second = (
        Pacing(FilePaceStore(tmp_path), Limits()),
        Pacing(FilePaceStore(tmp_path), Limits()),
    )
    assert second.wait(0, "a@fast.test") is None  # before: unlimited, not asked
    for _ in range(10):
        first.accepted(0, "a@fast.test")
    key, new_pace = first.throttled(0, "a@fast.test")
    assert key == "relay:0" and new_pace == pytest.approx(5.0)  # half of 10 in the last second
    assert first.wait(0, "a@fast.test") is not None  # the cut booked the next slot
    # The other process learns of it at its next refresh (a second at most).
    second._refreshed_at -= pace.REFRESH_SECONDS  # noqa: SLF001 - a second has passed
    wait = second.wait(0, "a@fast.test")
    assert wait is not None and wait.reason == "relay"


def test_without_the_shared_store_emails_go_on_unpaced_and_nothing_is_lost() -> None:
    """Redis down (nothing listens on the port): a drain neither stops nor holds its
    emails; the counts wait for the next batch."""
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    pacing = Pacing(
        RedisPaceStore(client), Limits(relay=Rate(10, 1)), relay_count=2, clock=time.monotonic
    )
    assert pacing.relay() == 0
    assert pacing.wait(0, "a@fast.test") is None
    pacing.accepted(0, "a@fast.test")
    key, new_pace = pacing.throttled(0, "a@fast.test")
    assert key == "relay:0" and new_pace == pytest.approx(10 * pace.RATE_MARGIN / 2)
    for _ in range(pace.OPEN_AFTER):
        pacing.relay_failed(0)
    assert pacing.relay() == 1  # this process's own view of the breaker still holds
    pacing.flush()
    assert pacing._counts == {"relay:0:sent": 1, "relay:0:throttled": 1}  # noqa: SLF001

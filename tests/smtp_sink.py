"""A real SMTP server in the test process (aiosmtpd) that records what it receives and can
be told to refuse a recipient with a given reply, or to go down and come back; and
`ThrottlingSink`, a relay with a sending quota of its own, as Amazon SES answers one."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, Self

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Received:
    recipients: tuple[str, ...]
    raw: bytes
    session: object  # the SMTP session (one per connection) it arrived on

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        planned = self.sink.next_refusal(address)
        if planned is not None:
            return planned
        refused = self.sink.over_quota(address)
        if refused is not None:
            return refused
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """aiosmtpd's own answer, with PIPELINING (RFC 2920) offered as relays do (it reads
        commands in turn from what arrived, so pipelined ones are answered in order)."""
        session.host_name = hostname
        if not self.sink.pipelining:
            return responses
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.sink.record(Received(tuple(envelope.rcpt_tos), bytes(envelope.content), session))
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self, port: int, *, pipelining: bool = True) -> None:
        self.port = port
        self.pipelining = pipelining  # offered in its EHLO answer
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._refusals: dict[str, deque[str]] = defaultdict(deque)
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    @classmethod
    @contextmanager
    def running(cls, port: int, **options: Any) -> Iterator[Self]:
        """The server, listening on `port` for the block (`options` go to the class)."""
        sink = cls(port, **options)
        sink.start()
        try:
            yield sink
        finally:
            sink.stop()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def refuse(self, address: str, *replies: str) -> None:
        """Answer the next RCPT TO of `address` with each of `replies`, in turn."""
        with self._lock:
            self._refusals[address.lower()].extend(replies)

    def over_quota(self, address: str) -> str | None:
        """The reply that refuses an email over the server's quota; None: no quota."""
        return None

    def next_refusal(self, address: str) -> str | None:
        with self._lock:
            queue = self._refusals.get(address.lower())
            return queue.popleft() if queue else None

    def record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [
                r for r in self._received if address.lower() in (a.lower() for a in r.recipients)
            ]

    def received(self) -> list[Received]:
        """Every email that arrived, to anyone, in the order they arrived."""
        with self._lock:
            return list(self._received)

    def total(self) -> int:
        """How many emails arrived, to anyone."""
        with self._lock:
            return len(self._received)

    def wait_for(self, address: str, count: int = 1, timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(found := self.to(address)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


THROTTLING_REPLY = "454 4.7.0 Throttling failure: Maximum sending rate exceeded."


class ThrottlingSink(SmtpSink):
    """A relay that accepts at most `per_second` emails in any second (a sliding window,
    the strictest reading of a provider's "maximum send rate") and answers
    `THROTTLING_REPLY` beyond it, as Amazon SES does; `domain_rates` gives some recipient
    domains a quota of their own, refused with a 4.7.0 of their own. Counts what it
    accepted and refused."""

    def __init__(
        self, port: int, *, per_second: float, domain_rates: dict[str, float] | None = None
    ) -> None:
        super().__init__(port)
        self.per_second = per_second
        self.domain_rates = domain_rates or {}
        self._accepted: dict[str, deque[float]] = defaultdict(deque)
        self.refused = 0
        self.accepted = 0

    def over_quota(self, address: str) -> str | None:
        now = time.monotonic()
        domain = address.rpartition("@")[2].lower()
        with self._lock:
            windows = [("", self.per_second)]
            if domain in self.domain_rates:
                windows.append((domain, self.domain_rates[domain]))
            for name, rate in windows:
                seen = self._accepted[name]
                while seen and seen[0] <= now - 1.0:
                    seen.popleft()
                if len(seen) >= rate:
                    self.refused += 1
                    if name:
                        return f"451 4.7.1 Too many messages to {name}, slow down"
                    return THROTTLING_REPLY
            for name, _ in windows:
                self._accepted[name].append(now)
            self.accepted += 1
            return None

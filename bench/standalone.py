"""Measurements that need no running service: the banned-keyword scan and SMTP delivery
with and without connection reuse (against a real SMTP server in this process)."""

from __future__ import annotations

import random
import string
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tests.smtp_sink import SmtpSink
from tests.support import free_port
from worker.domain.banned import build_matcher
from worker.domain.delivery import OutgoingEmail, build_mime
from worker.transports import SmtpTarget, SmtpTransport


def _best_of(repeat: int, fn: Callable[[], object]) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - started)
    return min(timings)


def banned_scan_ratio() -> dict[str, float]:
    """Scan a 100 KB body that matches nothing with 10 and with 10,000 keywords."""
    rng = random.Random(7)
    words = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 12))) for _ in range(20_000)
    ]
    body = " ".join(rng.choice(words[:2000]) for _ in range(15_000))[:100_000]
    keywords = [f"{w}zq" for w in words[2000:12_000]]  # never in the body
    few, many = build_matcher(keywords[:10], []), build_matcher(keywords, [])
    assert few.first_match(body) is None and many.first_match(body) is None
    t_few = _best_of(7, lambda: few.first_match(body))
    t_many = _best_of(7, lambda: many.first_match(body))
    return {
        "keywords_10_ms": round(t_few * 1000, 3),
        "keywords_10000_ms": round(t_many * 1000, 3),
        "ratio": round(t_many / t_few, 3),
    }


def smtp_reuse_ratio(count: int) -> dict[str, float]:
    """Deliver `count` emails over one connection, then over one connection each."""
    with SmtpSink.running(free_port()) as sink:
        target = SmtpTarget.from_url(sink.url)
        emails = [
            build_mime(
                OutgoingEmail(
                    message_id=f"<bench-{i}@securesend.local>",
                    recipient=f"r{i}@bench.example",
                    recipient_name="Reader",
                    subject="Secure message",
                    text="text " * 50,
                    html="<p>html</p>" * 50,
                ),
                mail_from="securesend <no-reply@securesend.local>",
                date=datetime.now(UTC),
            )
            for i in range(count)
        ]

        def reused() -> None:
            transport = SmtpTransport(target, timeout=10)
            for i, email in enumerate(emails):
                transport.send(email, recipient=f"r{i}@bench.example")
            transport.close()

        def per_email() -> None:
            for i, email in enumerate(emails):
                transport = SmtpTransport(target, timeout=10)
                transport.send(email, recipient=f"r{i}@bench.example")
                transport.close()

        t_reused = _best_of(3, reused)
        t_each = _best_of(3, per_email)
    return {
        "emails": count,
        "reused_per_s": round(count / t_reused, 1),
        "per_email_connection_per_s": round(count / t_each, 1),
        "ratio": round(t_each / t_reused, 3),
    }

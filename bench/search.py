"""What one SearchMessages costs in a mailbox of 100,000 messages.

    .venv/bin/python -m bench.search        (alone; `python -m bench` runs it too)

A sender's Sent folder and a reader's Inbox of `MAILBOX` messages each (one sender, one
reader, beside as many messages between two other users), written straight into
PostgreSQL; then searches through HTTP at concurrency 1,
each against GetUserSettings measured in the same run (an authenticated request with one
small transaction: what any operation costs), as a ratio of p50s.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import text
from sqlalchemy.orm import Session

from bench.http import Connection
from bench.seed import PASSWORD
from bench.stack import bench_stack
from tests.support import Stack
from worker.domain.secrets import hash_password

MAILBOX = 100_000
REQUESTS = 40
NEEDLE_EVERY = 1000  # one subject in a thousand holds the searched word

PAGE_SIZE = 25


def searches(messages: int) -> dict[str, str]:
    """Each search timed, by name: the deep pages are the middle of a mailbox of
    `messages` (page 2,000 at 100,000)."""
    middle = messages // 2 // PAGE_SIZE
    return {
        "inbox, first page": "filter={types:[Inbox]}",
        f"inbox, page {middle:,} (the middle)": f"filter={{types:[Inbox]}}&page={middle}",
        "inbox, text in 0.1% of subjects": "filter={types:[Inbox],searchCriteria:needle}",
        "inbox, text in no message": "filter={types:[Inbox],searchCriteria:nowhere}",
        "sent (sender), first page": "filter={types:[Sent]}",
        "all folders (sender), first page": "",
        f"all folders (sender), page {middle:,}": f"page={middle}",
        "all folders (sender), text in 0.1%": "filter={searchCriteria:needle}",
    }


def seed_mailbox(stack: Stack, *, messages: int = MAILBOX) -> tuple[str, str]:
    """A sender who sent `messages` messages to one reader, and as many between two other
    users (so that the planner sees tables as a service with many users has them); the
    first two's emails. PostgreSQL only (generate_series): through the ORM, this many
    rows would take minutes."""
    password_hash = hash_password(PASSWORD)
    with stack.database.write_session() as session:
        group_id = session.execute(
            text(
                "INSERT INTO groups (name, daily_messages, daily_invites, max_recipients,"
                " max_expiry_days, feature_fyeo, feature_confidential, feature_message_expiry,"
                " feature_invite_user, feature_cra, feature_send_to_contacts, feature_recall,"
                " banned_version) VALUES ('mailbox', 100, 10, 10, 30, false, false, false,"
                " false, false, true, true, 0) RETURNING id"
            )
        ).scalar_one()
        ids = {
            name: session.execute(
                text(
                    "INSERT INTO users (guid, email, password_hash, first_name, last_name,"
                    " group_id, state, locale, failed_logins, created_at) VALUES"
                    " (md5(:email), :email, :hash, 'Bench', :name, :group, 'active', 'en', 0,"
                    " now()) RETURNING id"
                ),
                {"email": _email(name), "hash": password_hash, "name": name, "group": group_id},
            ).scalar_one()
            for name in ("mailbox-sender", "mailbox-reader", "other-sender", "other-reader")
        }
        for sender, reader in (
            ("mailbox-sender", "mailbox-reader"),
            ("other-sender", "other-reader"),
        ):
            _sent_messages(
                session, messages, sender_id=ids[sender], reader_id=ids[reader], reader=reader
            )
    # What autovacuum does to tables that grew this much: statistics, and the visibility
    # map that lets a count read an index alone.
    with stack.database.engine.connect().execution_options(
        isolation_level="AUTOCOMMIT"
    ) as connection:
        connection.execute(text("VACUUM ANALYZE"))
    return _email("mailbox-sender"), _email("mailbox-reader")


def _email(name: str) -> str:
    return f"{name}@bench.example"


def _sent_messages(
    session: Session, count: int, *, sender_id: int, reader_id: int, reader: str
) -> None:
    """`count` messages from one sender to one reader, sent a second apart, with their
    recipients, deliveries and the search text their send would have written."""
    params = {
        "sender": sender_id,
        "reader": reader_id,
        "count": count,
        "every": NEEDLE_EVERY,
        "address": _email(reader),
    }
    for statement in (
        "INSERT INTO messages (guid, sender_id, action, status, subject, body,"
        " body_format, allow_forward, allow_reply, allow_reply_all, allow_tracking,"
        " share_tracking, fyeo_type, confidential, created_at, sent_at)"
        " SELECT md5(:sender || '-' || i), :sender, 'New', 'Sent',"
        " CASE WHEN i % :every = 0 THEN 'The needle report ' || i"
        " ELSE 'Quarterly figures ' || i END, 'a body', 'Text', true, true, true,"
        " false, false, 'Disabled', false,"
        " now() - i * interval '1 second', now() - i * interval '1 second'"
        " FROM generate_series(1, :count) AS i",
        "UPDATE messages AS m SET conversation_guid = m.guid, search_text = lower(m.subject"
        " || chr(10) || s.email || chr(10) || s.first_name || chr(10) || s.last_name"
        " || chr(10) || :address) FROM users AS s"
        " WHERE s.id = m.sender_id AND m.sender_id = :sender",
        "INSERT INTO recipients (message_id, kind, position, address, user_id)"
        " SELECT id, 'To', 0, :address, :reader FROM messages WHERE sender_id = :sender",
        "INSERT INTO deliveries (message_id, user_id, kind, created_at)"
        " SELECT id, :reader, 'To', sent_at FROM messages WHERE sender_id = :sender",
    ):
        session.execute(text(statement), params)


async def _timed(stack: Stack, token: str, path: str, count: int) -> list[float]:
    connection = Connection(stack.url(""))
    latencies = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            answer = await connection.request("GET", path, headers={"x-sm-session-token": token})
            latencies.append(time.perf_counter() - started)
            assert answer.status == 200, answer.body[:300]
    finally:
        await connection.close()
    return latencies


def _figures(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
    }


def measure_search(stack: Stack, *, messages: int = MAILBOX) -> dict[str, Any]:
    """Seed the mailbox, then time each search and the baseline read."""
    started = time.perf_counter()
    sender, reader = seed_mailbox(stack, messages=messages)
    seeded_s = round(time.perf_counter() - started, 1)
    tokens = {who: stack.login(who, PASSWORD) for who in (sender, reader)}
    baseline = _figures(
        asyncio.run(_timed(stack, tokens[reader], "/api/v1/user/settings", REQUESTS))
    )
    results: dict[str, Any] = {
        "mailbox_messages": messages,
        "seeded_in_s": seeded_s,
        "baseline_get_user_settings": baseline,
        "searches": {},
    }
    for name, query in searches(messages).items():
        token = tokens[sender if "(sender)" in name else reader]
        path = "/api/v1/messages/search?" + quote(query, safe="=&")
        figures = _figures(asyncio.run(_timed(stack, token, path, REQUESTS)))
        figures["ratio_p50_to_baseline"] = round(figures["p50_ms"] / baseline["p50_ms"], 2)
        results["searches"][name] = figures
    return results


def print_search(results: dict[str, Any]) -> None:
    base = results["baseline_get_user_settings"]
    print(
        f"\nSearchMessages in a mailbox of {results['mailbox_messages']:,} messages "
        f"(c=1, {REQUESTS} each; baseline GetUserSettings p50 {base['p50_ms']} ms)"
    )
    for name, figures in results["searches"].items():
        print(
            f"  {name:<36} p50 {figures['p50_ms']:>7} ms  p95 {figures['p95_ms']:>7} ms"
            f"  x{figures['ratio_p50_to_baseline']} of the baseline"
        )


def main() -> int:
    var_dir = Path(tempfile.mkdtemp(prefix="bench-search-"))
    with bench_stack(smtp_url="", var_dir=var_dir) as stack:
        results = measure_search(stack)
    print_search(results)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

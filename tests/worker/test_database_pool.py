"""The PostgreSQL pool keeps the connections the API's concurrency needs: a connection
beyond the pool is closed when returned, and each new one costs the server a forked
backend (docs/performance.md: GetJob at 16 concurrent requests spent 1.4 ms of
PostgreSQL CPU per request with a pool of 10, 0.3 ms with one large enough)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from tests.support import create_postgres_database, drop_postgres_database
from worker.db import WITHOUT_WAITING_FOR_DISK, Database
from worker.settings import Settings

CONCURRENT = 16  # the benchmark's middle load level


def test_concurrent_transactions_reuse_their_connections() -> None:
    url = create_postgres_database()
    database = Database(url, pool_size=Settings(database_url=url).database_pool_size)
    together = threading.Barrier(CONCURRENT)

    def backend_pid() -> int:
        def in_transaction(session: Session) -> int:
            pid = int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
            together.wait(timeout=10)  # all CONCURRENT transactions open at once
            return pid

        return database.run(in_transaction, write=False)

    try:
        with ThreadPoolExecutor(CONCURRENT) as threads:
            rounds = [
                set(threads.map(lambda _: backend_pid(), range(CONCURRENT))) for _ in range(3)
            ]
    finally:
        database.dispose()
        drop_postgres_database(url)
    assert all(len(pids) == CONCURRENT for pids in rounds)
    assert len(set().union(*rounds)) == CONCURRENT  # no connection opened after round one


def test_a_statement_alone_commits_without_waiting_for_disk_and_only_itself() -> None:
    """`Database.run_alone` with WITHOUT_WAITING_FOR_DISK: the statement's own transaction
    has synchronous_commit off; the pooled connection's next transaction (a send's, which
    must be durable) has it on again, and a run_alone statement is committed at once."""
    url = create_postgres_database()
    database = Database(url, pool_size=1)  # one connection: the next run reuses it
    other = Database(url, pool_size=1)
    setting = select(func.current_setting("synchronous_commit"))
    try:
        with database.write_session() as session:
            session.execute(text("CREATE TABLE probe (id int PRIMARY KEY)"))
        inside = database.run_alone(
            lambda c: c.execute(setting.where(WITHOUT_WAITING_FOR_DISK)).scalar_one()
        )
        database.run_alone(lambda c: c.execute(text("INSERT INTO probe VALUES (1)")))
        after = database.run(lambda session: session.execute(setting).scalar_one())
        alone_after = database.run_alone(lambda c: c.execute(setting).scalar_one())
        committed = other.run(
            lambda session: session.execute(text("SELECT count(*) FROM probe")).scalar_one()
        )
    finally:
        database.dispose()
        other.dispose()
        drop_postgres_database(url)
    assert (inside, after, alone_after) == ("off", "on", "on")
    assert committed == 1

"""The engine and session factory: the only place that knows how to reach the database.

Domain functions take a `Session` and never commit; callers own the transaction through
`write_session()` / `read_session()`. On SQLite every write transaction starts with
`BEGIN IMMEDIATE`, so concurrent writers queue on the database lock (honouring
`busy_timeout`) instead of failing when a read lock cannot be upgraded; that is also what
makes the quota counters safe on SQLite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from sqlalchemy import Boolean, Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement

from worker.domain.errors import ApiError

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connections older than this are replaced on checkout (idle timeouts of proxies and
# firewalls). There is no pre-ping: see `Database.run`.
POOL_RECYCLE_SECONDS = 1800
T = TypeVar("T")
# What a database that cannot be reached raises (down, restarting, or the pool exhausted):
# the API answers 503 for it, the send task retries, a waiting request reads no answer.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
logger = logging.getLogger(__name__)


MAX_OVERFLOW = 20  # connections beyond the pool while busy (Settings.database_pool_size)


# A network that stops answering shows as an error in seconds, not a hang of minutes
# (docs/reliability.md, "A cut network"): connecting gives up after 5 s; a connection
# that is idle is probed after 5 s of silence, every 2 s, and given up after 3 missed
# probes; data the server does not acknowledge within 10 s fails the call (libpq's
# keepalive and TCP_USER_TIMEOUT parameters). A statement that merely runs long is not
# cut off: the server answers it.
POSTGRES_CONNECT_ARGS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


IDLE_IN_TRANSACTION_MS = 10_000


def _make_engine(url: str, *, immediate: bool, pool_size: int) -> Engine:
    if not url.startswith("sqlite"):
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=MAX_OVERFLOW,
            pool_recycle=POOL_RECYCLE_SECONDS,
            hide_parameters=True,
            connect_args=POSTGRES_CONNECT_ARGS,
        )

        @event.listens_for(engine, "connect")
        def _no_jit(dbapi_connection: Any, _record: Any) -> None:
            # PostgreSQL compiles a query with LLVM once its estimated cost passes
            # jit_above_cost: a SearchMessages count over 100,000 messages spent 350 ms
            # compiling to save nothing. (A SET, not a startup option, which PgBouncer
            # would refuse.)
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET jit = off")
                # A process frozen (or cut off) inside a transaction must not hold its row
                # locks for as long as it is away: the server ends such a session after
                # 10 s idle in a transaction, past WORKER_DEAD_AFTER_SECONDS, so the send
                # the others took over goes on (docs/reliability.md, "Fencing"). No
                # transaction here waits on anything but its own statements.
                cursor.execute(
                    f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}"
                )
            dbapi_connection.commit()

        return engine
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class _NoDiskWaitCondition(ColumnElement[bool]):
    """Always true; on PostgreSQL, evaluating it lets the transaction it runs in commit
    before PostgreSQL has flushed it to disk (`synchronous_commit = off`, that transaction
    only: PostgreSQL reads the setting when the statement's own transaction commits). In
    the WHERE or RETURNING clause of a statement run on its own (`Database.run_alone`),
    where a `SET LOCAL` would cost a round trip of its own.

    Only for writes whose loss in a crash of the *database server* (the last ~0.6 s of
    them) is harmless because they are written again: an email's delivery record (the
    email is then sent again, which delivery is allowed to do) and a send job's queued row
    (the send's own transaction records the job when it finds none). A crash of a worker
    or the API loses nothing: what PostgreSQL acknowledged is applied. SQLite: nothing to
    do (its WAL runs with synchronous=NORMAL throughout)."""

    inherit_cache = True
    # No state: the same cache key everywhere, so that statements holding it are compiled
    # once (without this SQLAlchemy compiles them on every execution).
    _traverse_internals: list[Any] = []
    type = Boolean()


@compiles(_NoDiskWaitCondition)
def _always_true(_element: _NoDiskWaitCondition, _compiler: SQLCompiler, **_: Any) -> str:
    return "1 = 1"


@compiles(_NoDiskWaitCondition, "postgresql")
def _set_no_disk_wait(_element: _NoDiskWaitCondition, _compiler: SQLCompiler, **_: Any) -> str:
    return "set_config('synchronous_commit', 'off', true) = 'off'"


WITHOUT_WAITING_FOR_DISK: ColumnElement[bool] = _NoDiskWaitCondition()


H = TypeVar("H", Session, Connection)


def _again_if_the_connection_was_dead(
    opener: Callable[[], AbstractContextManager[H]], fn: Callable[[H], T]
) -> T:
    """`fn` on what `opener` opens; once more on a fresh one if the first found its pooled
    connection dead (see `Database.run`)."""
    try:
        with opener() as handle:
            return fn(handle)
    except DBAPIError as e:
        if not e.connection_invalidated:
            raise
        logger.warning("database connection lost; running the transaction again")
    with opener() as handle:
        return fn(handle)


class Database:
    """One engine (two on SQLite: writers and readers) and their session factories."""

    def __init__(self, url: str, *, pool_size: int) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine = _make_engine(url, immediate=True, pool_size=pool_size)
        self.read_engine = (
            _make_engine(url, immediate=False, pool_size=pool_size)
            if self.is_sqlite
            else self.engine
        )
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """One short read-write transaction: committed on success, rolled back on error,
        except an `ApiError` that keeps its changes (a failed login counted): committed,
        then raised."""
        with self._write() as session:
            session.begin()
            try:
                yield session
            except ApiError as error:
                session.commit() if error.keep_changes else session.rollback()
                raise
            except BaseException:
                session.rollback()
                raise
            session.commit()

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A read-only transaction; on SQLite it never takes the write lock."""
        with self._read.begin() as session:
            yield session

    def run(self, fn: Callable[[Session], T], *, write: bool = True) -> T:
        """`fn(session)` in one transaction, run a second time if the first found its
        pooled connection dead (the database restarted, or closed it).

        The pool does not ping a connection before handing it out: that round trip, on
        every transaction, cost more than anything else in the API and the mail worker
        (docs/performance.md). A dead connection instead fails the first statement; the
        pool then replaces every connection older than that failure and `fn` runs again
        on a fresh one. `fn` must be safe to run twice: if the connection died during
        COMMIT, the first run may have been committed.
        """
        opener: Callable[[], AbstractContextManager[Session]] = (
            self.write_session if write else self.read_session
        )
        return _again_if_the_connection_was_dead(opener, fn)

    def run_alone(self, fn: Callable[[Connection], T]) -> T:
        """`fn(connection)` on a connection where each statement commits on its own: one
        write, or a read and then one write (rule 1 and a job row). On PostgreSQL in
        autocommit: a round trip per statement, where a transaction adds two (BEGIN and
        COMMIT). On SQLite, in a write transaction (`run`). Run a second time if the first
        found its pooled connection dead, as `run` is: `fn` must be safe to run twice."""
        if self.is_sqlite:
            return self.run(lambda session: fn(session.connection()))
        return _again_if_the_connection_was_dead(self._autocommit, fn)

    def _autocommit(self) -> AbstractContextManager[Connection]:
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()

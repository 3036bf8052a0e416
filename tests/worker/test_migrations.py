"""Alembic migrations run on both databases and match the models exactly."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from tests.support import Stack, create_postgres_database, drop_postgres_database
from tests.worker import rows
from worker.db import Database
from worker.migrate import alembic_config, upgrade_to_head
from worker.models import Base, Message, MessageAction, included_on
from worker.settings import Settings

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_schema_at_head_matches_the_models(stack: Stack) -> None:
    upgrade_to_head(stack.settings)  # a second run is a no-op
    with stack.database.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "include_object": included_on(connection.dialect.name)},
        )
        differences = compare_metadata(context, Base.metadata)
        tables = set(inspect(connection).get_table_names())
    assert differences == []
    assert {
        "messages",
        "recipients",
        "deliveries",
        "outbox",
        "invitations",
        "sessions",
        "send_jobs",
        "daily_usage",
        "banned_entries",
        "contacts",
        "groups",
        "users",
    } <= tables


@contextmanager
def _new_postgres_database(revision: str | None = None) -> Iterator[tuple[Settings, Database]]:
    """A database of its own on this machine's PostgreSQL, migrated up to `revision` (not
    migrated at all without one); dropped afterwards."""
    url = create_postgres_database()
    settings = Settings(database_url=url)
    database = Database(url, pool_size=settings.database_pool_size)
    try:
        if revision is not None:
            with database.engine.connect() as connection:
                config = alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        yield settings, database
    finally:
        database.dispose()
        drop_postgres_database(url)


def _version(database: Database) -> str | None:
    with database.engine.connect() as connection:
        version: str | None = connection.scalar(text("SELECT version_num FROM alembic_version"))
        return version


def test_created_at_indexes_build_without_blocking_writes_on_postgres() -> None:
    """Migration 0006 indexes the two largest tables. While it waits to build them (here
    behind a transaction that is writing to send_jobs), other writers to send_jobs must
    go on: a plain CREATE INDEX queues for a SHARE lock, and every later INSERT or UPDATE
    queues behind it; CREATE INDEX CONCURRENTLY does not."""
    with _new_postgres_database("0005") as (settings, database):
        with database.engine.connect() as writer:
            writer.execute(_TOUCH_JOBS)  # holds ROW EXCLUSIVE on send_jobs until rollback
            migration = threading.Thread(target=upgrade_to_head, args=(settings,))
            migration.start()
            try:
                _wait_for_index_build(database)
                with database.engine.connect() as other_writer:
                    other_writer.execute(text("SET LOCAL lock_timeout = '2s'"))
                    other_writer.execute(_TOUCH_JOBS)  # LockNotAvailable if blocked
                    other_writer.commit()
            finally:
                writer.rollback()
                migration.join(timeout=30)
        version = _version(database)
        with database.engine.connect() as connection:
            valid = connection.execute(
                text(
                    "SELECT indexrelid::regclass::text, indisvalid FROM pg_index "
                    "WHERE indexrelid::regclass::text LIKE 'ix_%created_at'"
                )
            ).all()
    assert version == HEAD
    assert sorted(valid) == [("ix_outbox_created_at", True), ("ix_send_jobs_created_at", True)]


_TOUCH_JOBS = text("UPDATE send_jobs SET attempts = attempts WHERE false")


def _wait_for_index_build(database: Database) -> None:
    deadline = time.monotonic() + 20
    with database.engine.connect() as connection:
        while time.monotonic() < deadline:
            waiting = connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query ILIKE 'CREATE INDEX%' AND wait_event_type = 'Lock'"
                )
            )
            connection.rollback()
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError("the migration never started building its indexes")


def test_several_processes_migrating_a_new_postgres_database_at_once_all_succeed() -> None:
    """Deployments may run `securesend migrate` from several places at once."""
    code = (
        "import sys, time; from worker.settings import Settings; "
        "from worker.migrate import upgrade_to_head; "
        "time.sleep(max(0, float(sys.argv[2]) - time.time())); "  # all start together
        "upgrade_to_head(Settings(database_url=sys.argv[1]))"
    )
    start_at = str(time.time() + 3)
    with _new_postgres_database() as (settings, database):
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", code, settings.database_url, start_at],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        outcomes = [(p.communicate(timeout=120)[1], p.returncode) for p in processes]
        version = _version(database)
    assert [returncode for _, returncode in outcomes] == [0, 0, 0], outcomes
    assert version == HEAD


def test_an_index_left_invalid_by_a_failed_concurrent_build_is_built_again() -> None:
    """CREATE INDEX CONCURRENTLY that fails midway leaves an INVALID index behind (here
    marked so directly, as a superuser can); running the migration again rebuilds it."""
    with _new_postgres_database("0005") as (settings, database):
        with database.engine.begin() as connection:
            connection.execute(
                text("CREATE INDEX ix_send_jobs_created_at ON send_jobs (created_at)")
            )
            connection.execute(
                text(
                    "UPDATE pg_index SET indisvalid = false "
                    "WHERE indexrelid = 'ix_send_jobs_created_at'::regclass"
                )
            )
        upgrade_to_head(settings)
        with database.engine.connect() as connection:
            valid = connection.scalar(
                text(
                    "SELECT indisvalid FROM pg_index "
                    "WHERE indexrelid = 'ix_send_jobs_created_at'::regclass"
                )
            )
    assert valid is True


def test_migration_0007_gives_existing_reply_trees_their_conversation() -> None:
    """Messages written before 0007 (here: written at head, then the column dropped by
    going down to 0006) get the GUID of the root of their reply tree."""
    with _new_postgres_database(HEAD) as (settings, database):
        with database.write_session() as session:
            user = rows.sender(session)
            root = Message(sender_id=user.id)
            other_root = Message(sender_id=user.id)
            session.add_all([root, other_root])
            session.flush()
            reply = Message(sender_id=user.id, parent_id=root.id, action=MessageAction.REPLY)
            session.add(reply)
            session.flush()
            deeper = Message(sender_id=user.id, parent_id=reply.id, action=MessageAction.REPLY)
            session.add(deeper)
            session.flush()
            guids = [m.guid for m in (root, other_root, reply, deeper)]
        with database.engine.connect() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "0006")  # through 0008 and 0007
        upgrade_to_head(settings)
        with database.read_session() as session:
            conversations = dict(
                session.execute(select(Message.guid, Message.conversation_guid)).all()
            )
    root_guid, other_guid, reply_guid, deeper_guid = guids
    assert conversations == {
        root_guid: root_guid,
        other_guid: other_guid,
        reply_guid: root_guid,
        deeper_guid: root_guid,
    }

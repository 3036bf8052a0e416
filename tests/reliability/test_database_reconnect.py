"""Pooled connections have no pre-ping (docs/performance.md): when PostgreSQL drops every
connection (a restart, a failover, an idle timeout), the next request and the next send
must still be answered, each on a fresh connection."""

from __future__ import annotations

import psycopg

from tests.support import POSTGRES_ADMIN_URL, Stack

RETRIED = "database connection lost; running the transaction again"


def _drop_every_connection(stack: Stack) -> int:
    """Terminate every server process connected to the stack's database; returns how many."""
    database = stack.config.database_url.rsplit("/", 1)[1]
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    stack.database.dispose()  # the test's own pool lost its connections too
    return len(rows)


def test_api_and_worker_reconnect_after_the_database_drops_every_connection(
    postgres_stack: Stack, unique: str
) -> None:
    sender, password = postgres_stack.make_user(unique)
    reader, _ = postgres_stack.make_user(unique, name="reader")
    token = postgres_stack.login(sender, password)
    warm_up = postgres_stack.draft(token, to=[reader], subject="warm up", body="body")
    assert postgres_stack.send(token, warm_up).status_code == 200  # API and worker pools used
    guid = postgres_stack.draft(token, to=[reader], subject="after the drop", body="body")

    assert _drop_every_connection(postgres_stack) >= 2  # at least the API's and a worker's

    with postgres_stack.client() as client:
        quotas = client.get("/api/v1/user/quotas", headers={"x-sm-session-token": token})
    assert quotas.status_code == 200, quotas.text
    _drop_every_connection(postgres_stack)
    response = postgres_stack.send(token, guid)
    assert response.status_code == 200, response.text
    assert response.json()["responseStatus"] is None
    # Answered because the dead connections were noticed and the work run again, not
    # because the pools happened to open new ones.
    assert RETRIED in postgres_stack.log("api")
    assert RETRIED in postgres_stack.log("worker")

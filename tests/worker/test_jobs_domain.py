"""Opening a send job (worker.domain.jobs) on each backend."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from tests.factories import DomainWorld
from worker.db import Database
from worker.domain import auth, jobs
from worker.domain.errors import ApiError
from worker.models import Lane, SendJob, UserSession, UserState, new_guid
from worker.payloads import SENDER_FROM_SESSION, SendJobV1
from worker.settings import Settings


def test_opening_a_job_twice_keeps_the_first_row(
    module_database: tuple[Settings, Database], unique: str
) -> None:
    """`Database.run_alone` runs the job row's insert again when its connection died,
    and the first run may have committed: the second leaves that row as it is, and the
    request goes on (it would otherwise fail on the row's primary key)."""
    settings, database = module_database
    world = DomainWorld(database, settings, unique).setup()
    caller = world.login(world.sender)
    job_id, guid = new_guid(), new_guid()

    def open_job(payload: dict[str, object]) -> None:
        database.run_alone(
            lambda connection: jobs.open_send_job(
                connection,
                caller=caller,
                job_id=job_id,
                message_guid=guid,
                payload=payload,
                lane=Lane.BULK,
                now=world.now,
            )
        )

    open_job({"run": 1})
    open_job({"run": 2})
    with database.read_session() as session:
        rows = session.scalar(select(func.count()).where(SendJob.id == job_id))
        payload = session.scalars(select(SendJob.payload).where(SendJob.id == job_id)).one()
    assert (rows, payload) == (1, {"run": 1})


def _open_as(
    world: DomainWorld, token: str, job_id: str, *, now_later: timedelta = timedelta()
) -> auth.Caller:
    """`open_send_job_as` for `token`'s session, with a job as the API publishes it."""
    now = world.now + now_later
    job = SendJobV1.for_send(
        job_id=job_id,
        sender_guid=SENDER_FROM_SESSION,
        message_guid=new_guid(),
        password="not in the row",
        lane=Lane.INTERACTIVE,
        keys=world.keys,
    )
    session = auth.session_key(token, now=now, idle=world.settings.session_idle, keys=world.keys)
    return world.database.run_alone(
        lambda connection: jobs.open_send_job_as(
            connection,
            session=session,
            job_id=job_id,
            message_guid=job.message_guid,
            payload=job.model_dump(mode="json", by_alias=True),
            lane=Lane.INTERACTIVE,
            now=now,
        )
    )


def _job_rows(database: Database, job_id: str) -> list[tuple[int, dict[str, object] | None]]:
    with database.read_session() as session:
        return [
            (row.user_id, row.payload)
            for row in session.execute(
                select(SendJob.user_id, SendJob.payload).where(SendJob.id == job_id)
            )
        ]


def test_a_job_is_opened_as_its_sessions_caller_with_the_sender_in_its_payload(
    module_database: tuple[Settings, Database], unique: str
) -> None:
    """Rule 1 and the job row in one statement (on PostgreSQL): the caller of the
    session, and a row whose payload names that caller as its sender, which is what the
    jobs sweep publishes again; run twice (a connection that died), one row."""
    settings, database = module_database
    world = DomainWorld(database, settings, unique).setup()
    token, job_id = world.new_session(world.sender), new_guid()
    caller = _open_as(world, token, job_id)
    again = _open_as(world, token, job_id)
    sender_guid = world.guid_of(world.sender)
    assert (caller.user_guid, again.user_guid) == (sender_guid, sender_guid)
    [(user_id, payload)] = _job_rows(database, job_id)
    assert user_id == caller.user_id
    assert payload is not None
    published = SendJobV1.model_validate(payload)
    assert (published.sender_guid, published.job_id) == (sender_guid, job_id)
    assert published.lane is Lane.INTERACTIVE and published.sealed_secrets


def test_a_bad_session_opens_no_job(
    module_database: tuple[Settings, Database], unique: str
) -> None:
    """Logged out, idle past the limit, or of a user no longer active: 811, and no row
    (the statement inserts only from the session it found)."""
    settings, database = module_database
    world = DomainWorld(database, settings, unique).setup()
    idle = settings.session_idle
    logged_out = world.new_session(world.sender)
    with database.write_session() as session:
        session.execute(
            update(UserSession)
            .where(UserSession.token_hash == world.keys.token_digest(logged_out))
            .values(ended_at=world.now)
        )
    idle_too_long = world.new_session(world.sender, last_seen_at=world.now - idle)
    disabled_user = world.user("disabled")
    of_disabled = world.new_session(disabled_user)
    world.set_user_state(disabled_user, UserState.DISABLED)
    for token in (logged_out, idle_too_long, of_disabled, "unknown"):
        job_id = new_guid()
        with pytest.raises(ApiError) as refused:
            _open_as(world, token, job_id)
        assert refused.value.kind.code == "811"
        assert _job_rows(database, job_id) == []
    # Alive until the idle time has passed, to the microsecond.
    just_alive = world.new_session(world.sender, last_seen_at=world.now - idle)
    assert _open_as(world, just_alive, new_guid(), now_later=-timedelta(microseconds=1))

"""Opening a send job (worker.domain.jobs) on each backend."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.factories import DomainWorld
from worker.db import Database
from worker.domain import jobs
from worker.models import Lane, SendJob, new_guid
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

"""Send jobs as the HTTP side sees them (SPEC 4.1): open one, read its outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.domain import errors
from worker.domain.auth import Caller
from worker.domain.errors import ApiError
from worker.models import JobStatus, SendJob


@dataclass(frozen=True, slots=True)
class JobView:
    job_id: str
    status: JobStatus
    http_status: int | None
    response: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)

    def as_wire(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "status": self.status.value,
            "httpStatus": self.http_status,
            "response": self.response,
        }


def open_send_job(
    session: Session, *, caller: Caller, job_id: str, message_guid: str, now: datetime
) -> None:
    """Record a queued job for the caller; the worker fills in its outcome."""
    session.add(
        SendJob(
            id=job_id,
            user_id=caller.user_id,
            message_guid=message_guid,
            status=JobStatus.QUEUED,
            created_at=now,
        )
    )


def _view(job: SendJob) -> JobView:
    return JobView(
        job_id=job.id, status=job.status, http_status=job.http_status, response=job.response
    )


def find_job(session: Session, job_id: str) -> JobView | None:
    job = session.get(SendJob, job_id)
    return _view(job) if job is not None else None


def get_own_job(session: Session, *, caller: Caller, job_id: str) -> JobView:
    """The caller's job; another user's job answers 404 like a missing one."""
    job = session.scalars(
        select(SendJob).where(SendJob.id == job_id, SendJob.user_id == caller.user_id)
    ).one_or_none()
    if job is None:
        raise ApiError(errors.JOB_NOT_FOUND)
    return _view(job)

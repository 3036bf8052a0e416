"""SendMessage (rule 1 here, the rest in the worker) and the jobs API (SPEC 4.1)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from api_shim.dtos import JobRequest, SendMessageRequest
from api_shim.pipeline import Call, Reply
from api_shim.registry import Operation
from api_shim.responses import JobAccepted, JobResponse, SendMessageResponse
from worker.domain import clock, errors, jobs
from worker.domain.auth import Caller, SessionKey
from worker.domain.secrets import Keys
from worker.models import JobStatus, Lane, new_guid
from worker.payloads import SENDER_FROM_SESSION, SendJobV1

JOBS_PATH = "/api/v1/jobs/"
SEND_ERRORS = (
    errors.MESSAGE_NOT_FOUND,
    errors.MESSAGE_RECALLED,
    errors.FORWARD_NOT_ALLOWED,
    errors.REPLY_NOT_ALLOWED,
    errors.REPLY_ALL_NOT_ALLOWED,
    errors.NO_FYEO_FEATURE,
    errors.NO_CONFIDENTIAL_FEATURE,
    errors.EXPIRY_DISABLED,
    errors.EXPIRY_INVALID,
    errors.FYEO_PASSWORD_MISSING,
    errors.FYEO_PASSWORD_WRONG,
    errors.RECIPIENTS_LIMIT,
    errors.RECIPIENT_DISABLED,
    errors.CONTACTS_NOT_ALLOWED,
    errors.BANNED_CONTENT,
    errors.INVITE_FAILED,
    errors.CRA_REQUIRED_ONE,
    errors.CRA_REQUIRED_MANY,
    errors.DAILY_LIMIT_REACHED,
    errors.SEND_FAILED,
)


def _job_payload(
    dto: SendMessageRequest, *, sender_guid: str, job_id: str, lane: Lane, keys: Keys
) -> SendJobV1:
    return SendJobV1.for_send(
        job_id=job_id,
        sender_guid=sender_guid,
        message_guid=dto.message_guid,
        password=dto.password or "",
        cra_code=dto.cra_code or "",
        invite_new_users=dto.invite_new_users is True,
        send_email_notification=dto.send_email_notification is not False,
        notification_formats=dto.notification_formats or (),
        lane=lane,
        keys=keys,
    )


def _accepted(job_id: str) -> Reply[JobAccepted]:
    return Reply(
        body=JobAccepted(job_id=job_id, status=JobStatus.QUEUED.value),
        status=202,
        headers={"Location": JOBS_PATH + job_id},
    )


def _prefers_async(call: Call[SendMessageRequest]) -> bool:
    prefer = call.request.headers.get("prefer", "")
    return any(p.strip().lower() == "respond-async" for p in prefer.split(","))


def _open_job(
    connection: Connection,
    session: SessionKey,
    *,
    dto: SendMessageRequest,
    keys: Keys,
    job_id: str,
    lane: Lane,
) -> tuple[Caller, SendJobV1]:
    """Rule 1 and the queued job row together (`jobs.open_send_job_as`: nothing is
    queued for a bad session); the job as it is published, from the caller found."""
    job = _job_payload(dto, sender_guid=SENDER_FROM_SESSION, job_id=job_id, lane=lane, keys=keys)
    caller = jobs.open_send_job_as(
        connection,
        session=session,
        job_id=job.job_id,
        message_guid=job.message_guid,
        payload=job.model_dump(mode="json", by_alias=True),
        lane=lane,
        now=clock.now(),
    )
    return caller, job.model_copy(update={"sender_guid": caller.user_guid})


async def send_message(call: Call[SendMessageRequest]) -> Reply[Any]:
    dto, keys, dispatcher = call.dto, call.services.keys, call.services.dispatcher
    job_id = new_guid()
    # A caller that waits is a person at a client: the interactive lane, ahead of every
    # bulk send. One that asked not to wait is a batch: the bulk lane (docs/design.md).
    lane = Lane.BULK if _prefers_async(call) else Lane.INTERACTIVE

    async def open_and_publish() -> bool:
        # Rule 1 with the job row, then the publish, in one hop to a thread. If the broker is
        # down, the job row stays queued and the jobs sweep publishes it.
        return await call.alone_then(
            lambda connection, session: _open_job(
                connection, session, dto=dto, keys=keys, job_id=job_id, lane=lane
            ),
            dispatcher.publish,
        )

    if lane is Lane.BULK:
        await open_and_publish()
        return _accepted(job_id)
    wait = call.services.settings.send_wait_seconds
    result = await dispatcher.send_and_wait(job_id, open_and_publish, wait)
    if result is None:
        return _accepted(job_id)
    # The worker's answer, as the job row keeps it: a SendMessageResponse or an error.
    return Reply(body=result.response, status=result.http_status)


async def get_job(call: Call[JobRequest]) -> JobResponse:
    job_id = call.dto.job_id
    job = await call.read(
        lambda session, caller: jobs.get_own_job(session, caller=caller, job_id=job_id)
    )
    return JobResponse.of(job)


OPERATIONS = (
    Operation(
        "SendMessage",
        (("PUT", "/messages/{messageGuid}/send"),),
        SendMessageRequest,
        send_message,
        summary="Send a draft message",
        response=SendMessageResponse,
        errors=SEND_ERRORS,
        extra_responses={202: ("Queued: Prefer: respond-async, or the wait ran out", JobAccepted)},
    ),
    Operation(
        "GetJob",
        (("GET", "/jobs/{jobId}"),),
        JobRequest,
        get_job,
        summary="A send job of the caller's",
        response=JobResponse,
        errors=(errors.JOB_NOT_FOUND,),
    ),
)

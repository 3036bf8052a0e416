"""Jobs that do not wait (SPEC 4.1): Prefer: respond-async, the jobs API, and direct
enqueue of `securesend.send_message` by another service."""

from __future__ import annotations

from typing import Any

from tests.support import Stack
from worker.celery_factory import create_app
from worker.client import build_send_job, send_job_options
from worker.domain import delivery
from worker.domain.secrets import Keys
from worker.payloads import SendJobV1
from worker.queues import SEND_TASK
from worker.sending import may_queue_emails


def _user_guid(stack: Stack, token: str) -> str:
    with stack.client() as client:
        # GetMessage of a fresh draft names its sender.
        guid = client.post(
            "/api/v1/messages/", json={}, headers={"x-sm-session-token": token}
        ).json()["messageGuid"]
        message = client.get(f"/api/v1/messages/{guid}", headers={"x-sm-session-token": token})
    return str(message.json()["sender"]["guid"])


def _draft_and_its_job(stack: Stack, unique: str, **job: Any) -> tuple[str, str, dict[str, Any]]:
    """A sender's session token, a draft of theirs to a reader, and the job payload a
    direct enqueuer builds to send it (`job`: more `build_send_job` arguments)."""
    sender, password = stack.make_user(unique)
    reader, _ = stack.make_user(unique, name="reader")
    token = stack.login(sender, password)
    guid = stack.draft(token, to=[reader], subject="direct", body="b")
    payload = build_send_job(
        sender_guid=_user_guid(stack, token),
        message_guid=guid,
        secret_key=stack.settings.secret_key,
        **job,
    )
    return token, guid, payload


def test_respond_async_then_poll_the_job(stack: Stack, unique: str, wait_until: object) -> None:
    sender, password = stack.make_user(unique)
    reader, _ = stack.make_user(unique, name="reader")
    token = stack.login(sender, password)
    guid = stack.draft(token, to=[reader], subject="async", body="b")
    headers = {"x-sm-session-token": token, "prefer": "respond-async"}

    with stack.client() as client:
        accepted = client.put(f"/api/v1/messages/{guid}/send", json={}, headers=headers)
        assert accepted.status_code == 202
        job_id = accepted.json()["jobId"]
        assert accepted.json() == {"jobId": job_id, "status": "queued"}
        assert accepted.headers["location"] == f"/api/v1/jobs/{job_id}"

        def finished() -> dict[str, object] | None:
            job = client.get(accepted.headers["location"], headers={"x-sm-session-token": token})
            assert job.status_code == 200
            body: dict[str, object] = job.json()
            return body if body["status"] == "succeeded" else None

        job = wait_until(finished, timeout=20)  # type: ignore[operator]
        assert job is not None, "the job did not finish"
        assert job["httpStatus"] == 200
        again = stack.send(token, guid)
        assert job["response"] == again.json()

        other, other_pw = stack.make_user(unique, name="other")
        foreign = client.get(
            f"/api/v1/jobs/{job_id}", headers={"x-sm-session-token": stack.login(other, other_pw)}
        )
        assert foreign.status_code == 404


def test_direct_enqueue_by_task_name(stack: Stack, unique: str) -> None:
    token, guid, payload = _draft_and_its_job(stack, unique, notification_formats=["Text"])
    celery = create_app(stack.settings)

    result = celery.send_task(SEND_TASK, args=[payload], **send_job_options(payload))
    answer = result.get(timeout=30)

    assert answer["httpStatus"] == 200
    assert answer["response"]["notificationSent"] is True
    assert answer["response"]["notificationBodyHtml"] is None
    assert stack.send(token, guid).json() == answer["response"]


def test_direct_enqueue_with_keyword_arguments_delivers_the_notification(
    stack: Stack, unique: str, wait_until: Any
) -> None:
    """`kwargs={"payload": …}` works like `args=[…]`, drain request included: the
    notification is delivered."""
    token, guid, payload = _draft_and_its_job(stack, unique)
    celery = create_app(stack.settings)

    result = celery.send_task(SEND_TASK, kwargs={"payload": payload}, **send_job_options(payload))

    assert result.get(timeout=30)["httpStatus"] == 200

    def statuses() -> list[str]:
        emails = stack.database.run(
            lambda session: delivery.email_statuses(session, message_guid=guid), write=False
        )
        return [str(email["status"]) for email in emails]

    assert wait_until(lambda: statuses() == ["sent"], timeout=20), statuses()
    # The drain was asked for by the task, not left to the outbox sweep: its success hook
    # found the payload (it logs "on_success handler raised" when it cannot).
    job_lines = [line for line in stack.log("worker").splitlines() if payload["jobId"] in line]
    assert job_lines, "the worker logged nothing about the job"
    assert not [line for line in job_lines if "handler raised" in line], job_lines


def test_direct_enqueue_with_a_bad_payload_answers_validation(stack: Stack) -> None:
    celery = create_app(stack.settings)
    result = celery.send_task(SEND_TASK, args=[{"version": 1, "jobId": "x"}])
    answer = result.get(timeout=30)
    assert answer["httpStatus"] == 400
    assert answer["response"]["responseStatus"]["errorCode"] == "ValidationException"


def test_only_a_send_that_can_have_queued_emails_asks_for_a_drain() -> None:
    """The send task asks for an outbox drain (a Redis round trip, sometimes a publish)
    only when the job asked for its notification or for invitations."""

    def payload(*, notify: bool, invite: bool) -> dict[str, object]:
        job = SendJobV1.for_send(
            job_id="0" * 32,
            sender_guid="1" * 32,
            message_guid="2" * 32,
            send_email_notification=notify,
            invite_new_users=invite,
            keys=Keys("k" * 32),
        )
        return job.model_dump(mode="json", by_alias=True)

    assert may_queue_emails(payload(notify=True, invite=False))
    assert may_queue_emails(payload(notify=False, invite=True))
    assert not may_queue_emails(payload(notify=False, invite=False))
    assert not may_queue_emails({"version": 1, "jobId": "not a job"})
    assert not may_queue_emails(None)  # no payload at all (neither args nor kwargs)

"""Bounces and complaints coming back (SPEC 8): `securesend bounces` reads DSNs and ARF
complaints sent to an email's return path, records them on its delivery record and
suppresses the address; anything else is refused with a clear SMTP reply and changes
nothing. On both stacks, the server a process of its own with the stack's settings."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.factories import World
from tests.support import Stack, free_port
from tests.webhook_receiver import Receiver, running_receiver
from worker.domain import bounces, clock, suppressions
from worker.domain.delivery import OutgoingEmail, build_mime
from worker.domain.secrets import Keys
from worker.models import EmailStatus, OutboxEmail, Suppression
from worker.processes import child_dies_with_parent

BOUNCE_ADDRESS = "bounces@securesend.test"


_PROCESSES: dict[str, tuple[subprocess.Popen[bytes], int]] = {}


@pytest.fixture(scope="module")
def bounce_port_of() -> Iterator[Any]:
    """The port of each stack's bounce server (MAIL_BOUNCE_ADDRESS set), started on first
    use and stopped with the module."""

    def port_of(stack: Stack) -> int:
        if stack.config.name not in _PROCESSES:
            port = free_port()
            command = [sys.executable, "-m", "worker.cli", "bounces"]
            with _bounce_log(stack).open("ab") as log:  # the process keeps its own copy
                process = subprocess.Popen(
                    [*command, "--host", "127.0.0.1", "--port", str(port)],
                    env={**stack.env, "MAIL_BOUNCE_ADDRESS": BOUNCE_ADDRESS},
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                    preexec_fn=child_dies_with_parent(),
                )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            _PROCESSES[stack.config.name] = (process, port)
        return _PROCESSES[stack.config.name][1]

    yield port_of
    for process, _ in _PROCESSES.values():
        process.terminate()
        process.wait(10)
    _PROCESSES.clear()


def _bounce_log(stack: Stack) -> Path:
    """What a stack's bounce server writes (its log lines go to stderr)."""
    return stack.var_dir / "bounces.log"


def _dsn(status: str, action: str = "failed", *, original_subject: str | None = None) -> bytes:
    """A DSN; with `original_subject`, it carries the returned email's headers, as most
    relays' DSNs do (a `text/rfc822-headers` part)."""
    original = (
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Subject: {original_subject}\r\nFrom: securesend <no-reply@securesend.local>\r\n\r\n"
        if original_subject is not None
        else ""
    )
    return (
        "From: MAILER-DAEMON@mx.example.org\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; someone@example.org\r\nAction: {action}\r\n"
        f"Status: {status}\r\nDiagnostic-Code: smtp; 550 {status} User unknown\r\n\r\n"
        f"{original}--b--\r\n"
    ).encode()


ARF = (
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=feedback-report; boundary="f"\r\n\r\n'
    b"--f\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n"
    b"--f\r\nContent-Type: message/feedback-report\r\n\r\n"
    b"Feedback-Type: abuse\r\nUser-Agent: Example/1.0\r\nVersion: 1\r\n\r\n"
    b"--f--\r\n"
)


def _report(port: int, to: str, body: bytes, *, sender: str = "") -> tuple[int, str]:
    """Send `body` to `to`; the server's reply to the first command it refused, or 250."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("mx.example.org")
        code, reply = client.mail(sender)
        if code != 250:
            return code, reply.decode()
        code, reply = client.rcpt(to)
        if code != 250:
            return code, reply.decode()
        code, reply = client.data(body)
        return code, reply.decode()


def _email_to(stack: Stack, address: str) -> int:
    """The latest email to `address`, once the relay has accepted it: a report comes back
    only for an email that left."""
    deadline = time.monotonic() + 20
    while True:
        with stack.database.read_session() as session:
            found = session.execute(
                select(OutboxEmail.id, OutboxEmail.status)
                .where(OutboxEmail.recipient == address)
                .order_by(OutboxEmail.id.desc())
                .limit(1)
            ).one_or_none()
        assert found is not None, address
        if found.status is EmailStatus.SENT or time.monotonic() > deadline:
            assert found.status is EmailStatus.SENT, found
            return int(found.id)
        time.sleep(0.05)


def _report_on(stack: Stack, port: int, address: str, body: bytes) -> tuple[int, str]:
    """`_report` of `body` to the return path of the latest email to `address`."""
    to = bounces.return_path(BOUNCE_ADDRESS, _email_to(stack, address), stack.keys)
    return _report(port, to, body)


def _suppressed(stack: Stack, address: str) -> dict[str, str]:
    with stack.database.read_session() as session:
        return suppressions.suppressed_among(session, [address], now=clock.now())


def _next_send_queues_no_email(world: World, address: str) -> str:
    """Send a new message to `address` alone: it is delivered, no email is queued and the
    send says so (`notificationSent` false), the email's delivery record says suppressed;
    its reason."""
    guid = world.draft(to=[address])
    answer = world.send(guid)
    assert answer.status_code == 200 and answer.json()["notificationSent"] is False, answer.text
    record = world.delivery_records(guid)[address]
    assert record["status"] == "suppressed", record
    return str(record["reason"])


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


def test_a_hard_bounce_marks_the_email_and_suppresses_the_address(
    stack: Stack, unique: str, bounce_port_of: Any, receiver: Receiver
) -> None:
    world = World(stack, unique).setup()
    path = f"/bounced/{unique}"
    secret = world.hook(receiver.url(path), events=["email.bounced"])
    reader = world.user("reader")
    subject = f"subject-{unique}-never-logged"
    guid = world.draft(to=[reader], subject=subject)
    assert world.send(guid).status_code == 200

    email_id = _email_to(stack, reader)
    to = bounces.return_path(BOUNCE_ADDRESS, email_id, stack.keys)
    assert _report(bounce_port_of(stack), to, _dsn("5.1.1", original_subject=subject))[0] == 250
    # The bounce server logs what it recorded (ids and kinds), never what the report quoted.
    log = _bounce_log(stack).read_text()
    assert f"recorded a hard for emails [{email_id}]" in log, log
    assert subject not in log
    record = world.delivery_records(guid)[reader]
    assert record["status"] == "bounced"
    assert record["reason"] == "hard bounce: 5.1.1 smtp; 550 5.1.1 User unknown"
    reason = "suppressed (bounce): hard bounce: 5.1.1 smtp; 550 5.1.1 User unknown"
    assert _suppressed(stack, reader) == {reader: reason}
    # The group's endpoint hears of it once, signed (verified as a receiver does).
    (told,) = receiver.wait_for(path, 1)
    event = told.verified(secret)
    assert event["type"] == "email.bounced"
    assert {k: event["data"][k] for k in ("messageGuid", "email", "bounceType", "dsnStatus")} == {
        "messageGuid": guid,
        "email": reader,
        "bounceType": "hard",
        "dsnStatus": "5.1.1",
    }
    assert event["data"]["diagnostic"] == "smtp; 550 5.1.1 User unknown"
    # Once: its delivery is recorded sent after that one attempt, and nothing else came.
    assert world.settled_webhooks() == [("email.bounced", EmailStatus.SENT, 1)]
    assert [r.headers["webhook-id"] for r in receiver.at(path)] == [told.headers["webhook-id"]]

    assert _next_send_queues_no_email(world, reader) == reason


def test_a_soft_bounce_waits_for_its_count_and_a_complaint_suppresses(
    stack: Stack, unique: str, bounce_port_of: Any, receiver: Receiver
) -> None:
    """SOFT_BOUNCES_BEFORE_SUPPRESSION as shipped (5): each soft bounce is on its email's
    record; the address is suppressed, as by a hard bounce, when its last 5 emails all
    bounced softly. A complaint suppresses at once."""
    world = World(stack, unique).setup()
    path = f"/reports/{unique}"
    secret = world.hook(receiver.url(path), events=["email.bounced", "email.complained"])
    soft, annoyed = world.user("soft"), world.user("annoyed")
    count = stack.settings.soft_bounces_before_suppression
    port = bounce_port_of(stack)
    first = world.sent_message([soft, annoyed])

    soft_reason = "soft bounce: 4.2.2 smtp; 550 4.2.2 User unknown"
    for n in range(1, count + 1):
        guid = first if n == 1 else world.sent_message([soft])
        assert _report_on(stack, port, soft, _dsn("4.2.2", action="delayed"))[0] == 250
        record = world.delivery_records(guid)[soft]
        assert (record["status"], record["reason"]) == ("bounced", soft_reason)
        if n < count:
            assert _suppressed(stack, soft) == {}, f"suppressed after {n} soft bounces"
    reason = f"suppressed (bounce): {count} soft bounces in a row, the last {soft_reason}"
    assert _suppressed(stack, soft) == {soft: reason}
    assert _next_send_queues_no_email(world, soft) == reason

    assert _report_on(stack, port, annoyed, ARF)[0] == 250
    record = world.delivery_records(first)[annoyed]
    assert (record["status"], record["reason"]) == ("complained", "complaint: abuse")
    assert _suppressed(stack, annoyed) == {annoyed: "suppressed (complaint): complaint: abuse"}
    assert _next_send_queues_no_email(world, annoyed) == "suppressed (complaint): complaint: abuse"

    received = receiver.wait_for(path, count + 1)
    told = [r.verified(secret) for r in received]
    assert sorted(
        (e["type"], e["data"]["email"], e["data"].get("bounceType"), e["data"].get("dsnStatus"))
        for e in told
    ) == [("email.bounced", soft, "soft", "4.2.2")] * count + [
        ("email.complained", annoyed, None, None)
    ]
    assert [e["data"]["feedbackType"] for e in told if e["type"] == "email.complained"] == ["abuse"]


def test_anything_else_is_refused_and_changes_nothing(
    stack: Stack, unique: str, bounce_port_of: Any, receiver: Receiver
) -> None:
    world = World(stack, unique).setup()
    path = f"/nothing/{unique}"
    world.hook(receiver.url(path), events=["email.bounced", "email.complained"])
    reader = world.user("reader")
    world.sent_message([reader])
    port = bounce_port_of(stack)
    real = bounces.return_path(BOUNCE_ADDRESS, _email_to(stack, reader), stack.keys)
    forged = real.replace(real.split("-")[-1].split("@")[0], "0" * 20)
    gone = bounces.return_path(BOUNCE_ADDRESS, 2**31 - 1, stack.keys)

    with stack.database.read_session() as session:
        before = session.scalar(select(func.count()).select_from(Suppression))
    assert _report(port, forged, _dsn("5.1.1"))[0] == 550
    assert _report(port, "postmaster@securesend.test", _dsn("5.1.1"))[0] == 550
    assert _report(port, real, b"not a report at all\r\n")[0] == 550
    assert _report(port, real, _dsn("5.1.1"), sender=BOUNCE_ADDRESS)[0] == 550  # a loop
    assert _report(port, gone, _dsn("5.1.1")) == (
        550,
        "5.1.1 No such email: the report changes nothing",
    )
    big = _dsn("5.1.1") + b"x" * 998 + b"\r\n" * 1 + (b"y" * 78 + b"\r\n") * 30_000  # 2.4 MB
    assert _report(port, real, big)[0] == 552
    with stack.database.read_session() as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == before
    assert _suppressed(stack, reader) == {}
    assert receiver.wait_for(path, 1, timeout=2) == []  # no event either


def test_a_return_path_names_one_email_and_cannot_be_forged() -> None:
    keys, other = Keys("a secret"), Keys("another secret")
    path = bounces.return_path(BOUNCE_ADDRESS, 42, keys)
    assert path.startswith("bounces+42-") and path.endswith("@securesend.test")
    assert bounces.email_of(BOUNCE_ADDRESS, path.upper(), keys) == 42
    assert bounces.email_of(BOUNCE_ADDRESS, path, other) is None
    assert bounces.email_of(BOUNCE_ADDRESS, path.replace("+42-", "+43-"), keys) is None
    assert bounces.email_of("bounces@elsewhere.test", path, keys) is None
    assert bounces.email_of(BOUNCE_ADDRESS, f"bounces+{2**31}-00@securesend.test", keys) is None
    email = OutgoingEmail("<m@x>", "bob@example.org", "", "s", "t", "h", return_path=path)
    assert build_mime(email, mail_from="a <a@b.test>", date=clock.now()).sender == path

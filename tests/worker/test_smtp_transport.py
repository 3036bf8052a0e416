"""The SMTP transport's conversation: the envelope pipelined when the relay offers
PIPELINING (RFC 2920), in turn when it does not, with the same answers either way."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.smtp_sink import THROTTLING_REPLY, SmtpSink
from tests.support import free_port
from worker.domain.delivery import (
    Mime,
    PermanentMailError,
    ThrottledMailError,
    TransientMailError,
)
from worker.transports import SmtpTarget, SmtpTransport

SENDER = "bounces+1@securesend.test"


def _mime(n: int) -> Mime:
    return Mime(
        data=f"Subject: {n}\r\nMessage-ID: <{n}@securesend.test>\r\n\r\nbody {n}\r\n".encode(),
        message_id=f"<{n}@securesend.test>",
        sender=SENDER,
    )


def _transport(port: int) -> SmtpTransport:
    return SmtpTransport(SmtpTarget.from_url(f"smtp://127.0.0.1:{port}"), timeout=3)


Script = Callable[[list[bytes]], list[bytes]]


@contextmanager
def _scripted_relay(answer_envelope: Script) -> Iterator[tuple[int, list[list[bytes]]]]:
    """A relay that offers PIPELINING and answers an envelope only once MAIL, RCPT and
    DATA have all arrived (`answer_envelope(the three lines)` gives its three replies): a
    client that waited for MAIL's reply before sending RCPT would wait for ever. Records
    each envelope as it arrived."""
    envelopes: list[list[bytes]] = []

    class Conversation(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"220 relay.test ESMTP\r\n")
            while line := self.rfile.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    self.wfile.write(b"250-relay.test\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n")
                elif verb == b"MAIL":
                    envelope = [line, self.rfile.readline(), self.rfile.readline()]
                    envelopes.append(envelope)
                    replies = answer_envelope(envelope)
                    self.wfile.write(b"".join(r + b"\r\n" for r in replies))
                    if replies[2].startswith(b"354"):
                        while self.rfile.readline() not in (b".\r\n", b""):
                            pass
                        refused = any(not r.startswith(b"25") for r in replies[:2])
                        self.wfile.write(
                            b"554 no valid recipients\r\n" if refused else b"250 ok\r\n"
                        )
                elif verb == b"QUIT":
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:  # RSET, NOOP
                    self.wfile.write(b"250 ok\r\n")

    class Relay(socketserver.ThreadingTCPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that hung up mid-conversation (the last test's) is no news

    server = Relay(("127.0.0.1", 0), Conversation)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], envelopes
    finally:
        server.shutdown()
        server.server_close()


def test_a_relay_offering_pipelining_gets_the_envelope_in_one_write() -> None:
    """MAIL, RCPT and DATA go out together and their replies are read in order; the
    data's final dot still waits for the hand-over."""
    handed: list[int] = []

    def hand_over() -> bool:
        handed.append(1)
        return True

    with _scripted_relay(lambda _: [b"250 ok", b"250 ok", b"354 go on"]) as (port, envelopes):
        transport = _transport(port)
        try:
            for n in range(3):
                transport.send(_mime(n), recipient=f"r{n}@example.test", hand_over=hand_over)
        finally:
            transport.close()
    assert len(envelopes) == 3 and len(handed) == 3
    mail, rcpt, data = envelopes[0]
    assert mail.startswith(b"mail FROM:<bounces+1@securesend.test> size=")
    assert (rcpt, data) == (b"rcpt TO:<r0@example.test>\r\n", b"data\r\n")


def test_a_refused_envelope_is_answered_in_order_and_the_connection_goes_on() -> None:
    """A relay that refuses the sender (and so the rest), or accepts DATA after refusing
    the recipient: the refusal raises as it would without pipelining, a DATA accepted
    regardless is ended with an empty message, and the next email goes through on the
    same connection."""
    answers = iter(
        [
            [b"550 5.7.1 sender refused", b"503 5.5.1 no sender", b"503 5.5.1 no recipients"],
            [b"250 ok", b"550 5.1.1 no such user", b"354 go on"],
            [b"250 ok", b"250 ok", b"354 go on"],
        ]
    )
    with _scripted_relay(lambda _: next(answers)) as (port, envelopes):
        transport = _transport(port)
        try:
            with pytest.raises(PermanentMailError, match="sender refused"):
                transport.send(_mime(1), recipient="a@example.test")
            with pytest.raises(PermanentMailError, match="no such user"):
                transport.send(_mime(2), recipient="b@example.test")
            transport.send(_mime(3), recipient="c@example.test")
        finally:
            transport.close()
    assert [e[1] for e in envelopes] == [
        b"rcpt TO:<a@example.test>\r\n",
        b"rcpt TO:<b@example.test>\r\n",
        b"rcpt TO:<c@example.test>\r\n",
    ]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "in-turn"])
def test_each_reply_means_the_same_with_and_without_pipelining(pipelining: bool) -> None:
    """Against aiosmtpd offering PIPELINING or not: a 5xx for the recipient is permanent,
    a throttling 4.7.0 slows down, another 4xx is retried later; then the same connection
    delivers the next email."""
    with SmtpSink.running(free_port(), pipelining=pipelining) as sink:
        sink.refuse("gone@example.test", "550 5.1.1 no such user")
        sink.refuse("slow@example.test", THROTTLING_REPLY)
        sink.refuse("later@example.test", "451 4.3.0 try again later")
        transport = _transport(sink.port)
        try:
            with pytest.raises(PermanentMailError):
                transport.send(_mime(1), recipient="gone@example.test")
            with pytest.raises(ThrottledMailError):
                transport.send(_mime(2), recipient="slow@example.test")
            with pytest.raises(TransientMailError) as later:
                transport.send(_mime(3), recipient="later@example.test")
            assert not isinstance(later.value, ThrottledMailError)
            transport.send(_mime(4), recipient="fine@example.test")
        finally:
            transport.close()
        [received] = sink.wait_for("fine@example.test")
    assert received.message["Subject"] == "4"
    assert len({r.session for r in sink.received()}) == 1  # one connection throughout


def test_the_scripted_relay_would_hang_a_client_that_waits_for_each_reply() -> None:
    """What makes the pipelining test mean something: the relay answers nothing until it
    has all three envelope lines."""
    with _scripted_relay(lambda _: [b"250 ok", b"250 ok", b"354 go on"]) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
            reader = raw.makefile("rb")
            reader.readline()
            raw.sendall(b"EHLO me\r\n")
            while not reader.readline().startswith(b"250 "):
                pass
            raw.sendall(b"MAIL FROM:<a@example.test>\r\n")
            with pytest.raises(TimeoutError):
                reader.readline()

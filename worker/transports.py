"""The mail transports (worker.domain.delivery.MailTransport): `SmtpTransport`
(production: one connection per worker process, reused across emails) and
`EmlDirectoryTransport` (the embedded default: `.eml` files under `var/outbox/`). Server
replies are classified for delivery: `ThrottledMailError` (a reply that asks to slow
down: worker.domain.pace.is_throttle), `UnreachableMailError` (the relay cannot be
reached or dropped the connection: the next relay is tried), `TransientMailError` (other
4xx replies; retried) and `PermanentMailError` (5xx replies; recorded, never retried).
"""

from __future__ import annotations

import logging
import os
import re
import smtplib
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from worker.domain.delivery import (
    EmailNotHeld,
    MailError,
    MailTransport,
    Mime,
    PermanentMailError,
    ThrottledMailError,
    TransientMailError,
    UnreachableMailError,
)
from worker.domain.pace import is_throttle
from worker.settings import Settings

logger = logging.getLogger(__name__)


def _reply(code: int, text: bytes | str) -> str:
    body = text.decode(errors="replace") if isinstance(text, bytes) else text
    return f"{code} {body}".strip()


def _classified(code: int, text: bytes | str) -> MailError:
    reply = _reply(code, text)
    if 500 <= code < 600:
        return PermanentMailError(reply)
    return ThrottledMailError(reply) if is_throttle(code, reply) else TransientMailError(reply)


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool
    starttls: bool

    @property
    def address(self) -> str:
        """`host:port`, without the credentials (for logs and metrics)."""
        return f"{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str) -> SmtpTarget:
        """`smtp://user:pass@host:port`, `smtps://…` (TLS from the start), `?starttls=1`."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:port")
        query = parse_qs(parts.query)
        implicit_tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=implicit_tls,
            starttls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
        )


class SmtpTransport:
    """One SMTP connection, opened on first use and reused for every later email."""

    def __init__(self, target: SmtpTarget, *, timeout: float) -> None:
        self._target = target
        self._timeout = timeout
        self._connection: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        target = self._target
        context = ssl.create_default_context()
        connection: smtplib.SMTP
        if target.implicit_tls:
            connection = smtplib.SMTP_SSL(
                target.host, target.port, timeout=self._timeout, context=context
            )
        else:
            connection = smtplib.SMTP(target.host, target.port, timeout=self._timeout)
            if target.starttls:
                connection.starttls(context=context)
        if target.username:
            connection.login(target.username, target.password or "")
        # The data's final dot is written on its own after the hand-over (`_sendmail`):
        # without this, Nagle's algorithm holds it for the server's delayed ACK (40 ms).
        if connection.sock is not None:
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        logger.info("SMTP connection to %s opened", target.address)
        return connection

    def send(
        self, message: Mime, *, recipient: str, hand_over: Callable[[], bool] = lambda: True
    ) -> None:
        """Send to exactly `recipient` (never to addresses found in the headers), asking
        `hand_over()` just before the data's final dot: without it the server discards the
        email when the connection closes (RFC 5321 4.1.1.4)."""
        for attempt in (1, 2):
            try:
                if self._connection is None:
                    self._connection = self._connect()
                refused = _sendmail(self._connection, message, recipient, hand_over)
            except EmailNotHeld:
                self._drop()  # the server discards the unfinished data
                raise
            except smtplib.SMTPServerDisconnected as e:
                # A reused connection the server closed while idle: reconnect once.
                self._drop()
                if attempt == 2:
                    raise UnreachableMailError(f"disconnected: {e}") from e
                continue
            except smtplib.SMTPRecipientsRefused as e:
                code, text = next(iter(e.recipients.values()))
                self._reset()
                raise _classified(code, text) from e
            except smtplib.SMTPAuthenticationError as e:
                # Wrong credentials are the operator's to fix: keep the email and retry.
                self._drop()
                raise TransientMailError(_reply(e.smtp_code, e.smtp_error)) from e
            except smtplib.SMTPResponseException as e:
                self._reset()
                raise _classified(e.smtp_code, e.smtp_error) from e
            except (OSError, smtplib.SMTPException) as e:
                self._drop()
                raise UnreachableMailError(f"connection error: {type(e).__name__}: {e}") from e
            if refused:
                code, text = next(iter(refused.values()))
                raise _classified(code, text)
            return

    def _reset(self) -> None:
        try:
            if self._connection is not None:
                self._connection.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except OSError:
                pass

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                connection.close()


class EmlDirectoryTransport:
    """The embedded default: each email becomes `<folder>/<Message-ID>.eml`."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def send(
        self, message: Mime, *, recipient: str, hand_over: Callable[[], bool] = lambda: True
    ) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", message.message_id.strip("<>"))
        # Written to a temporary file and renamed: a reader never sees half an email, and
        # a retried email replaces its earlier copy instead of adding a second one.
        fd, tmp = tempfile.mkstemp(dir=self._folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(message.data)
        if not hand_over():
            os.unlink(tmp)
            raise EmailNotHeld
        os.replace(tmp, self._folder / f"{name}.eml")

    def close(self) -> None:
        return None


def _sendmail(
    connection: smtplib.SMTP, message: Mime, recipient: str, hand_over: Callable[[], bool]
) -> dict[str, tuple[int, bytes]]:
    """`smtplib.SMTP.sendmail` for one recipient, the data's final dot held back until
    `hand_over()` says the email is still this worker's: the last moment it can be taken
    back. Raises as `sendmail` does, and `EmailNotHeld`."""
    connection.ehlo_or_helo_if_needed()
    options = [f"size={len(message.data)}"] if connection.has_extn("size") else []
    if connection.has_extn("pipelining"):
        _envelope_at_once(connection, message.sender, options, recipient)
    else:
        _envelope_in_turn(connection, message.sender, options, recipient)
    data = smtplib._quote_periods(message.data)  # type: ignore[attr-defined]  # noqa: SLF001
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    connection.send(data)
    if not hand_over():
        raise EmailNotHeld
    connection.send(b".\r\n")
    code, reply = connection.getreply()
    if code != 250:
        connection.rset()
        raise smtplib.SMTPDataError(code, reply)
    return {}


def _envelope_in_turn(
    connection: smtplib.SMTP, sender: str, options: list[str], recipient: str
) -> None:
    """MAIL, RCPT and DATA, each answered before the next is sent."""
    code, reply = connection.mail(sender, options)
    if code != 250:
        connection.rset()
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    code, reply = connection.rcpt(recipient)
    if code not in (250, 251):
        connection.rset()
        raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
    code, reply = connection.docmd("data")
    if code != 354:
        connection.rset()
        raise smtplib.SMTPDataError(code, reply)


def _envelope_at_once(
    connection: smtplib.SMTP, sender: str, options: list[str], recipient: str
) -> None:
    """MAIL, RCPT and DATA written together, then their three replies read in order (RFC
    2920, for a server that offers PIPELINING): one round trip where there were three,
    which is most of an email's time on a relay far away. Each refusal raises as in
    `_envelope_in_turn`; a DATA the server accepted after refusing the envelope is ended
    at once with an empty message, which it then refuses (RFC 2920 3.1)."""
    mail = f"mail FROM:{smtplib.quoteaddr(sender)}" + "".join(f" {o}" for o in options)
    commands = [mail, f"rcpt TO:{smtplib.quoteaddr(recipient)}", "data"]
    if any("\r" in c or "\n" in c for c in commands):
        raise smtplib.SMTPException("a line break in an SMTP command")
    connection.send("".join(f"{c}\r\n" for c in commands))
    (mail_code, mail_reply), (rcpt_code, rcpt_reply), (data_code, data_reply) = (
        connection.getreply(),
        connection.getreply(),
        connection.getreply(),
    )
    if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
        connection.send(b".\r\n")
        connection.getreply()
    if mail_code != 250:
        connection.rset()
        raise smtplib.SMTPSenderRefused(mail_code, mail_reply, sender)
    if rcpt_code not in (250, 251):
        connection.rset()
        raise smtplib.SMTPRecipientsRefused({recipient: (rcpt_code, rcpt_reply)})
    if data_code != 354:
        connection.rset()
        raise smtplib.SMTPDataError(data_code, data_reply)


def make_relays(settings: Settings) -> list[MailTransport]:
    """One SMTP transport per relay of `SMTP_URL`, in order; or `.eml` files under
    `var/outbox/` without one."""
    if settings.smtp_urls:
        return [
            SmtpTransport(SmtpTarget.from_url(url), timeout=settings.smtp_timeout_seconds)
            for url in settings.smtp_urls
        ]
    return [EmlDirectoryTransport(settings.outbox_dir)]

"""Turning an outbox row into a MIME email and handing it to a transport.

Two transports: `SmtpTransport` (production: one connection per worker process, reused
across emails) and `EmlDirectoryTransport` (the embedded default: `.eml` files under
`var/outbox/`). Failures are classified: `TransientMailError` (4xx replies, connection
errors; retried) and `PermanentMailError` (5xx replies; recorded, never retried).
"""

from __future__ import annotations

import logging
import os
import re
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from datetime import datetime
from email import charset as email_charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

logger = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def header_safe(value: str) -> str:
    """A header value with every CR, LF and other control character replaced by a space,
    so user input can never add a header (or a recipient)."""
    return " ".join(_CONTROL.sub(" ", value).split())


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    message_id: str
    recipient: str
    recipient_name: str
    subject: str
    text: str
    html: str


# The classic (compat32) MIME classes: the same standard email as `EmailMessage` with the
# default policy, built in a quarter of the time (docs/performance.md).
_UTF8 = email_charset.Charset("utf-8")
_UTF8.header_encoding = email_charset.BASE64
_UTF8.body_encoding = email_charset.QP
MAX_PLAIN_WORD = 60


def build_mime(email: OutgoingEmail, *, mail_from: str, date: datetime) -> Message:
    """multipart/alternative (text, then html) addressed to one recipient only; non-ASCII
    headers encoded (RFC 2047), bodies UTF-8 in quoted-printable."""
    message = MIMEMultipart("alternative")
    from_name, from_address = parseaddr(mail_from)
    message["From"] = formataddr((header_safe(from_name), from_address), charset=_UTF8)
    message["To"] = formataddr((header_safe(email.recipient_name), email.recipient), charset=_UTF8)
    message["Subject"] = _subject_header(header_safe(email.subject))
    message["Message-ID"] = email.message_id
    message["Date"] = format_datetime(date)
    message["Auto-Submitted"] = "auto-generated"
    message.attach(_text_part(email.text, "plain"))
    message.attach(_text_part(email.html, "html"))
    return message


def _subject_header(subject: str) -> str:
    """Plain when it is ASCII that folds at its spaces, RFC 2047 encoded words otherwise:
    non-ASCII text, or a word too long for one line (a header line must stay under 998
    octets, and compat32 folds plain text only at whitespace)."""
    if subject.isascii() and all(len(word) <= MAX_PLAIN_WORD for word in subject.split()):
        return subject
    # A compat32 message takes a Header object as a value (typeshed only knows str).
    return Header(subject, _UTF8)  # type: ignore[return-value]


def _text_part(text: str, subtype: str) -> Message:
    part = MIMENonMultipart("text", subtype)
    part.set_payload(text, _UTF8)  # sets the charset parameter and the QP encoding
    return part


class MailError(Exception):
    """Delivery of one email failed; `reply` is what the server (or the socket) said."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class TransientMailError(MailError):
    """Worth retrying: a 4xx reply or a connection problem."""


class PermanentMailError(MailError):
    """Not worth retrying: a 5xx reply."""


class MailTransport(Protocol):
    def send(self, message: Message, *, recipient: str) -> None: ...
    def close(self) -> None: ...


def _reply(code: int, text: bytes | str) -> str:
    body = text.decode(errors="replace") if isinstance(text, bytes) else text
    return f"{code} {body}".strip()


def _classified(code: int, text: bytes | str) -> MailError:
    reply = _reply(code, text)
    return PermanentMailError(reply) if 500 <= code < 600 else TransientMailError(reply)


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool
    starttls: bool

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
        self.connections_opened = 0

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
        self.connections_opened += 1
        logger.info("SMTP connection to %s:%s opened", target.host, target.port)
        return connection

    def send(self, message: Message, *, recipient: str) -> None:
        """Send to exactly `recipient` (never to addresses found in the headers)."""
        for attempt in (1, 2):
            try:
                if self._connection is None:
                    self._connection = self._connect()
                refused = self._connection.send_message(message, to_addrs=[recipient])
            except smtplib.SMTPServerDisconnected as e:
                # A reused connection the server closed while idle: reconnect once.
                self._drop()
                if attempt == 2:
                    raise TransientMailError(f"disconnected: {e}") from e
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
                raise TransientMailError(f"connection error: {type(e).__name__}: {e}") from e
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

    def send(self, message: Message, *, recipient: str) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", str(message["Message-ID"]).strip("<>"))
        # Written to a temporary file and renamed: a reader never sees half an email, and
        # a retried email replaces its earlier copy instead of adding a second one.
        fd, tmp = tempfile.mkstemp(dir=self._folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(message.as_bytes())
        os.replace(tmp, self._folder / f"{name}.eml")

    def close(self) -> None:
        return None

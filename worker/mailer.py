"""The mail transport of this worker process: opened on first use, reused for every email
the process delivers, closed when the process shuts down."""

from __future__ import annotations

from worker.domain.mail import EmlDirectoryTransport, MailTransport, SmtpTarget, SmtpTransport
from worker.settings import Settings, get_settings

_transport: MailTransport | None = None


def make_transport(settings: Settings) -> MailTransport:
    if settings.smtp_url:
        return SmtpTransport(
            SmtpTarget.from_url(settings.smtp_url), timeout=settings.smtp_timeout_seconds
        )
    return EmlDirectoryTransport(settings.outbox_dir)


def mail_transport() -> MailTransport:
    global _transport
    if _transport is None:
        _transport = make_transport(get_settings())
    return _transport


def close_mail_transport() -> None:
    global _transport
    transport, _transport = _transport, None
    if transport is not None:
        transport.close()

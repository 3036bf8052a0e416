"""`securesend bounces`: the SMTP server that bounces and complaints come back to (aiosmtpd).

It accepts mail only for the return paths securesend gives its emails
(`worker.domain.bounces`), reads a DSN or an ARF complaint, records it on the email's
delivery record and suppresses the address as the SPEC says. Everything else is refused
with a reply that says why, and changes nothing: an address that is not a return path
(550 5.1.1), mail from securesend's own addresses (a loop, 550 5.7.1), a message that is
not a report (550 5.6.0), one larger than MAX_REPORT_BYTES (552, aiosmtpd's), a report
about an email that no longer exists (550 5.1.1); a database that cannot be reached is a
451, so the reporting server tries again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from email.utils import parseaddr
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from worker import drains
from worker.domain import bounces, clock
from worker.models import Channel
from worker.runtime import Runtime

logger = logging.getLogger(__name__)
# A DSN or a complaint is a few KB, with the original's headers (or the whole original,
# which securesend's emails keep small); past this the server answers 552.
MAX_REPORT_BYTES = 1024 * 1024


class BounceHandler:
    """aiosmtpd's handler: each SMTP command answered as the module says."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.bounce_address = settings.mail_bounce_address
        own = {parseaddr(settings.mail_from)[1].lower(), self.bounce_address.lower()}
        self.own_addresses = {a for a in own if a}

    def _email_of(self, address: str) -> int | None:
        return bounces.email_of(self.bounce_address, address, self.runtime.keys)

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        sender = address.strip("<>").lower()
        if sender in self.own_addresses or self._email_of(sender) is not None:
            return "550 5.7.1 Mail from securesend's own addresses is refused (a loop)"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self._email_of(address) is None:
            return "550 5.1.1 Not a bounce address of this server"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        report = bounces.read_report(envelope.original_content or envelope.content or b"")
        if report is None:
            return "550 5.6.0 Not a delivery status notification or a feedback report"
        email_ids = [i for i in (self._email_of(a) for a in envelope.rcpt_tos) if i is not None]
        try:
            known = await asyncio.to_thread(self._record, email_ids, report)
        except (OperationalError, InterfaceError):
            logger.warning("a report could not be recorded: the database is unavailable")
            return "451 4.3.0 Cannot record the report now; try again later"
        if not known:
            return "550 5.1.1 No such email: the report changes nothing"
        logger.info("recorded a %s for emails %s", report.kind, known)
        # Their groups' webhook endpoints may have an event to hear (else the drain finds none).
        await asyncio.to_thread(drains.request_drain, self.runtime, channel=Channel.WEBHOOK)
        return "250 OK: recorded"

    async def handle_exception(self, error: Exception) -> str:
        """Whatever else went wrong: logged here, never told to the remote server (aiosmtpd
        would quote the exception)."""
        logger.error("a report could not be handled", exc_info=error)
        return "451 4.3.0 Cannot handle the report now; try again later"

    def _record(self, email_ids: list[int], report: bounces.Report) -> list[int]:
        settings, now = self.runtime.settings, clock.now()
        return self.runtime.database.run(
            lambda session: [
                email_id
                for email_id in email_ids
                if bounces.record_report(
                    session,
                    email_id=email_id,
                    report=report,
                    now=now,
                    suppression_days=settings.suppression_days,
                    soft_bounces=settings.soft_bounces_before_suppression,
                    keys=self.runtime.keys,
                )
            ],
            write=True,
        )


def serve(runtime: Runtime, *, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    from aiosmtpd.controller import Controller

    controller = Controller(
        BounceHandler(runtime),
        hostname=host,
        port=port,
        data_size_limit=MAX_REPORT_BYTES,
        ready_timeout=10,
    )
    # aiosmtpd logs every command, addresses included, at INFO: its warnings are enough.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    controller.start()
    logger.info("securesend bounces: listening on %s:%d", host, port)
    try:
        stop.wait()
    finally:
        controller.stop()

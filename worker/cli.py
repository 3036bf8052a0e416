"""The `securesend` console script (SPEC 1): up, api, worker, migrate, load."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.processes import child_dies_with_parent
from worker.settings import get_settings

if TYPE_CHECKING:
    from worker.runtime import Runtime

logger = logging.getLogger("securesend")


@contextmanager
def _runtime() -> Iterator[Runtime]:
    """The command's runtime, closed when it is done."""
    from worker.runtime import Runtime

    runtime = Runtime.build(get_settings())
    try:
        yield runtime
    finally:
        runtime.close()


def _configure_logging() -> None:
    from worker.logging_setup import configure_logging

    configure_logging(get_settings())


def cmd_migrate(_: argparse.Namespace) -> int:
    from worker.migrate import upgrade_to_head

    upgrade_to_head(get_settings())
    print("database schema is up to date")
    return 0


def _migrate_if_sqlite() -> None:
    if get_settings().is_sqlite:
        from worker.migrate import upgrade_to_head

        upgrade_to_head(get_settings())


def cmd_load(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from worker.domain import clock
    from worker.domain.fixtures import load_fixtures, read_fixture_file

    _migrate_if_sqlite()
    try:
        fixtures = read_fixture_file(Path(args.file))
        with _runtime() as runtime, runtime.database.write_session() as session:
            counts = load_fixtures(session, fixtures, keys=runtime.keys, now=clock.now())
    except ValidationError as e:
        # Without the values: a password or a webhook secret is never echoed.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in e.errors(include_input=False, include_url=False)
        )
        print(f"securesend load: {args.file}: {problems}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"securesend load: {args.file}: {e}", file=sys.stderr)
        return 2
    print(f"loaded {counts['groups']} groups and {counts['users']} users from {args.file}")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    _migrate_if_sqlite()
    uvicorn.run(
        "api_shim.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=get_settings().log_level.lower(),
        log_config=None,  # keep securesend's handlers (JSON in production)
        proxy_headers=False,
    )
    return 0


def _worker_argv(concurrency: int | None, queues: str | None, beat: bool) -> list[str]:
    from worker.queues import ALL_QUEUES

    settings = get_settings()
    argv = ["worker", "--loglevel", settings.log_level.upper()]
    argv += ["--queues", queues or ",".join(ALL_QUEUES)]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if beat:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", "--schedule", str(settings.var_dir / "celerybeat-schedule")]
    return argv


def cmd_worker(args: argparse.Namespace) -> int:
    _migrate_if_sqlite()
    if args.no_supervise:
        from worker.celery_app import app

        app.worker_main(_worker_argv(args.concurrency, args.queues, args.beat))
        return 0
    child_argv = [sys.executable, "-m", "worker.cli", "worker", "--no-supervise"]
    if args.concurrency:
        child_argv += ["--concurrency", str(args.concurrency)]
    if args.queues:
        child_argv += ["--queues", args.queues]
    if args.beat:
        child_argv.append("--beat")
    return supervise(child_argv)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


RESTART_DELAY_MAX_SECONDS = 30.0
STABLE_AFTER_SECONDS = 60.0


def supervise(argv: list[str]) -> int:
    """Run the Celery worker as a child and start it again whenever it dies on its own.

    kombu can kill a worker while it reconnects to a restarted Redis ("Unrecoverable
    error: AttributeError … 'hostname'", seen here); the service must recover by itself.
    SIGTERM and SIGINT are passed on (as SIGTERM: a warm shutdown), and then the child's
    exit ends the supervisor. If the supervisor itself is killed (kill -9 after a stop
    timeout, the OOM killer), the kernel kills the child too, and its pool processes die
    with it; what they held is taken over by the other workers' lifelines as after any
    crash. (Not SIGQUIT: Celery 5.7's cold shutdown first waits out the soft shutdown, and
    a killed supervisor means its manager wanted it gone already.)
    """
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            # SIGTERM either way: a Ctrl-C also reached the child (same process group),
            # and a second SIGINT would turn its warm shutdown into a cold one.
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failures = 0
    while True:
        started = time.monotonic()
        # Its own process group, so that pool processes a dead Celery leaves behind can
        # be cleared away with it.
        child = subprocess.Popen(
            argv, start_new_session=True, preexec_fn=child_dies_with_parent(signal.SIGKILL)
        )
        code = child.wait()
        _kill_group(child.pid)
        if stopping:
            return code
        failures = 0 if time.monotonic() - started > STABLE_AFTER_SECONDS else failures + 1
        delay = min(RESTART_DELAY_MAX_SECONDS, 0.5 * 2**failures)
        logger.error("worker exited with code %s; starting it again in %.1fs", code, delay)
        time.sleep(delay)
        if stopping:
            return code


def cmd_emails(args: argparse.Namespace) -> int:
    """Print the delivery status of every email of one message."""
    from worker.domain.delivery import email_statuses
    from worker.models import guid_n_form

    try:
        guid = guid_n_form(args.message_guid)
    except ValueError:
        print(f"securesend emails: {args.message_guid!r} is not a GUID", file=sys.stderr)
        return 2
    with _runtime() as runtime, runtime.database.read_session() as session:
        emails = email_statuses(session, message_guid=guid)
    if not emails:
        print(f"no emails for message {guid}")
        return 1
    for e in emails:
        print(email_line(e))
    return 0


def email_line(e: dict[str, Any]) -> str:
    """One email of `securesend emails`: id, kind, status, attempts, address, Message-ID
    and the last reply. A deferred email waits for the relay's pace (worker.domain.pace),
    which is not a retry: its status reads "deferred (rate)"."""
    from worker.models import EmailStatus

    error = f"  {e['lastError']}" if e["lastError"] else ""
    status = "deferred (rate)" if e["status"] == EmailStatus.DEFERRED else e["status"]
    return (
        f"{e['id']:>8}  {e['kind']:<12} {status:<15} attempts={e['attempts']}  "
        f"{e['recipient']}  {e['messageId']}{error}"
    )


def cmd_suppressions(args: argparse.Namespace) -> int:
    """List, add or remove addresses on the suppression list (worker.domain.suppressions)."""
    import getpass

    from worker.domain import clock, suppressions

    now = clock.now()
    with _runtime() as runtime, runtime.database.write_session() as session:
        if args.action == "list":
            entries = suppressions.active_entries(session, now=now)
            for e in entries:
                until = e.expires_at.isoformat() if e.expires_at else "until removed"
                print(
                    f"{e.address}  {e.source:<9} since {e.created_at.isoformat()}  {until}"
                    f"  {e.reason}".rstrip()
                )
            print(f"{len(entries)} suppressed")
            return 0
        if not args.address:
            print(f"securesend suppressions {args.action}: an address is needed", file=sys.stderr)
            return 2
        if args.action == "add":
            entry = suppressions.suppress(
                session,
                args.address,
                source="manual",
                reason=args.reason,
                now=now,
                days=args.days,
            )
            print(f"suppressed {entry.address}")
            return 0
        removed = suppressions.remove(
            session, args.address, by=args.by or f"operator {getpass.getuser()}", now=now
        )
        print(f"removed {removed} suppression(s) of {args.address}")
        return 0 if removed else 1


def cmd_webhooks(args: argparse.Namespace) -> int:
    """Add, list, remove, rotate or replay webhook endpoints (worker.domain.webhooks)."""
    import json
    from datetime import UTC, datetime
    from urllib.parse import urlsplit

    from worker import drains
    from worker.domain import clock, webhooks
    from worker.domain.webhooks import WebhookRefused, WebhookUnreachable
    from worker.models import Channel
    from worker.webhook_transport import check_public

    def fail(message: str) -> int:
        print(f"securesend webhooks {args.action}: {message}", file=sys.stderr)
        return 2

    now = clock.now()
    settings = get_settings()
    try:
        with _runtime() as runtime, runtime.database.write_session() as session:
            if args.action == "list":
                found = webhooks.list_endpoints(session, group=args.group)
                print(json.dumps([e.as_dict() for e in found], indent=2))
                return 0
            if args.action == "add":
                if not (args.group and args.url):
                    return fail("--group and --url are needed")
                parts = urlsplit(webhooks.check_url(args.url))
                port = parts.port or (443 if parts.scheme == "https" else 80)
                try:
                    check_public(
                        parts.hostname or "",
                        port,
                        allow_private=settings.webhook_allow_private_networks,
                    )
                except WebhookRefused as e:
                    return fail(e.reason)
                except WebhookUnreachable as e:
                    print(f"warning: {e.reason}; added all the same", file=sys.stderr)
                endpoint, secret = webhooks.add_endpoint(
                    session,
                    group=args.group,
                    url=args.url,
                    events=args.events,
                    secret=args.secret,
                    keys=runtime.keys,
                    now=now,
                )
                print(f"{endpoint.uid}  {endpoint.group}  {', '.join(endpoint.events)}")
                if secret is not None:  # made up here: shown once, stored sealed
                    print(f"secret (shown once): {secret}")
                return 0
            if args.action in ("remove", "rotate") and not args.id:
                return fail("an endpoint id (ep_…) is needed")
            if args.action == "remove":
                removed = webhooks.remove_endpoint(session, args.id)
                print(f"removed {args.id}" if removed else f"no endpoint {args.id}")
                return 0 if removed else 1
            if args.action == "rotate":
                secret = webhooks.rotate_secret(
                    session, args.id, secret=args.secret, keys=runtime.keys, now=now
                )
                if args.secret is None:
                    print(f"secret (shown once): {secret}")
                print(f"the previous secret signs too until {now + webhooks.ROTATION_OVERLAP}")
                return 0
            since = datetime.fromisoformat(args.since) if args.since else None
            if since is not None and since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
            count = webhooks.replay(
                session,
                now=now,
                webhook_id=None if since else args.id,
                since=since,
                endpoint=args.endpoint,
            )
        drains.request_drain(runtime, channel=Channel.WEBHOOK)
        print(f"queued {count} deliveries again")
        return 0
    except ValueError as e:
        return fail(str(e))


def cmd_bounces(args: argparse.Namespace) -> int:
    """Serve the SMTP server bounces and complaints come back to (worker.bounce_server)."""
    from worker.bounce_server import serve

    if not get_settings().mail_bounce_address:
        print("securesend bounces: MAIL_BOUNCE_ADDRESS is not set", file=sys.stderr)
        return 2
    with _runtime() as runtime:
        serve(runtime, host=args.host, port=args.port)
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    """Render every email template with sample data into a folder a browser can open."""
    from worker.domain.previews import render_previews

    out = Path(args.out)
    written = render_previews(get_settings(), out, group=args.group)
    print(f"wrote {len(written)} files; open {out / 'index.html'} in a browser")
    return 0


class _Stop(Exception):
    """SIGTERM or SIGINT reached `securesend up`."""


def _stop_on_signals() -> None:
    def stop(signum: int, _frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


UP_STOP_SECONDS = 40  # longer than a worker's soft shutdown (20 s) and its supervisor's


def cmd_up(args: argparse.Namespace) -> int:
    """Migrate, then run api + worker (+ flower with Redis) as child processes until
    SIGTERM or SIGINT (Ctrl-C), which stop them all (the worker with its soft shutdown);
    they also die with `up` if it is killed."""
    from worker.migrate import upgrade_to_head

    settings = get_settings()
    upgrade_to_head(settings)
    exe = [sys.executable, "-m", "worker.cli"]
    commands = [
        ("api", [*exe, "api", "--host", args.host, "--port", str(args.port)]),
        ("worker", [*exe, "worker", "--concurrency", str(args.concurrency)]),
    ]
    if settings.uses_redis:
        flower = ["-m", "celery", "-A", "worker.celery_app", "flower"]
        flower += [f"--port={args.flower_port}", "--address=127.0.0.1"]
        commands.append(("flower", [sys.executable, *flower]))
    if settings.mail_bounce_address:
        bounces = ["bounces", "--host", args.host, "--port", str(args.bounces_port)]
        commands.append(("bounces", [*exe, *bounces]))
    _stop_on_signals()
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for name, command in commands:
            children.append((name, subprocess.Popen(command, preexec_fn=child_dies_with_parent())))
        broker = "redis" if settings.uses_redis else "embedded (var/broker)"
        database = "sqlite (var/)" if settings.is_sqlite else "postgresql"
        print(f"securesend api     http://{args.host}:{args.port}/api/v1  (ping: /public/ping)")
        print(f"securesend worker  broker {broker}, database {database}")
        if settings.uses_redis:
            print(f"flower             http://127.0.0.1:{args.flower_port}")
        if settings.mail_bounce_address:
            print(f"securesend bounces smtp://{args.host}:{args.bounces_port}")
        print("press Ctrl-C to stop")
        while all(p.poll() is None for _, p in children):
            time.sleep(0.5)
        for name, p in children:
            if p.poll() is not None:
                print(f"{name} exited with code {p.returncode}; stopping the rest")
        code = 1
    except _Stop as stop:
        print(f"{stop}: stopping")
        code = 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop_children(children)
    return code


def _stop_children(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    for _, p in children:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + UP_STOP_SECONDS
    for name, p in children:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in time; killing it")
            p.kill()
            p.wait()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="securesend", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="migrate, then run api + worker (+ flower) until Ctrl-C")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--concurrency", type=int, default=2)
    up.add_argument("--flower-port", type=int, default=5555)
    up.add_argument("--bounces-port", type=int, default=2525, help="with MAIL_BOUNCE_ADDRESS")
    up.set_defaults(func=cmd_up)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--workers", type=int, default=1)
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run a Celery worker (all queues by default)")
    worker.add_argument("--concurrency", type=int, default=None)
    worker.add_argument(
        "--queues",
        default=None,
        help="comma-separated queue names (default: all, taken in this order: "
        "securesend.mail,securesend.send.interactive,securesend.send)",
    )
    worker.add_argument(
        "--beat",
        action="store_true",
        help="also run Celery beat (not needed: every worker runs the sweeps and retention)",
    )
    worker.add_argument(
        "--no-supervise",
        action="store_true",
        help="run Celery in this process, without restarting it when it dies",
    )
    worker.set_defaults(func=cmd_worker)

    emails = sub.add_parser("emails", help="show the delivery status of a message's emails")
    emails.add_argument("message_guid")
    emails.set_defaults(func=cmd_emails)

    suppressed = sub.add_parser(
        "suppressions", help="list, add or remove addresses no email goes to"
    )
    suppressed.add_argument("action", choices=("list", "add", "remove"))
    suppressed.add_argument("address", nargs="?")
    suppressed.add_argument("--reason", default="", help="add: why (shown in delivery records)")
    suppressed.add_argument("--days", type=int, default=None, help="add: for this long only")
    suppressed.add_argument("--by", default=None, help="remove: who (recorded)")
    suppressed.set_defaults(func=cmd_suppressions)

    hooks = sub.add_parser("webhooks", help="add, list, remove, rotate or replay webhook endpoints")
    hooks.add_argument("action", choices=("add", "list", "remove", "rotate", "replay"))
    hooks.add_argument(
        "id", nargs="?", help="remove/rotate: the endpoint (ep_…); replay: a webhook-id (msg_…)"
    )
    hooks.add_argument("--group", help="add: the sender group; list: only its endpoints")
    hooks.add_argument("--url", help="add: where events are posted")
    hooks.add_argument("--events", default="*", help="add: comma-separated event types, or *")
    hooks.add_argument("--secret", default=None, help="add/rotate: a whsec_ secret (else made up)")
    hooks.add_argument("--since", default=None, help="replay: every event since (ISO 8601)")
    hooks.add_argument("--endpoint", default=None, help="replay: of this endpoint only")
    hooks.set_defaults(func=cmd_webhooks)

    bounced = sub.add_parser("bounces", help="receive bounces and complaints (SMTP)")
    bounced.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a mail server
    bounced.add_argument("--port", type=int, default=2525)
    bounced.set_defaults(func=cmd_bounces)

    preview = sub.add_parser("preview", help="render every email template with sample data")
    preview.add_argument("--out", default="var/preview")
    preview.add_argument("--group", default=None, help="render a sender group's overrides")
    preview.set_defaults(func=cmd_preview)

    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(func=cmd_migrate)

    load = sub.add_parser("load", help="load fixtures from a JSON or YAML file (idempotent)")
    load.add_argument("file")
    load.set_defaults(func=cmd_load)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

"""A peer to measure securesend's email rate against: django-post-office with Celery.

    .venv/bin/python -m bench.post_office [--sends 400] [--concurrency 16] [--warmup N]
        [--server gunicorn|uvicorn]

The peer is a minimal Django project (bench/post_office_site/) whose `POST /send` renders a
post_office EmailTemplate for one recipient with `post_office.mail.send` (priority medium:
queued) and answers; post_office's Celery integration (`CELERY_ENABLED`, as its README sets
it up) then runs `send_queued_mail` after the commit, which delivers whatever is queued
through Django's SMTP backend (under a file lock: while one task delivers, the others
exit at once). One web process and one Celery worker (`-c 2`, Celery's
defaults otherwise) on this machine's PostgreSQL (a database of their own, dropped
afterwards) and Redis (database 9, flushed before and after), delivering to an SMTP server
in this process (aiosmtpd). After `--warmup` sends (by default one per connection, not
measured), `sends` requests at `concurrency` over kept-alive connections, timed from the
first request until the last email arrived, with the CPU each part spent until the
machine was idle again: the same measurement as securesend's `emails_per_s` at c=16
(bench/run.py `measure_emails`), whose stack is warm by then.

The web server is one process either way:

- `gunicorn` (the default): Django's WSGI application in one gthread worker with one thread
  per client connection, and persistent database connections (`CONN_MAX_AGE` 60): Django's
  documented deployment on gunicorn, a connection per thread reused across requests.
  Gunicorn's sync worker serves one request at a time per process: not at c=16.
- `uvicorn`: Django's ASGI application, as securesend's API is served (uvloop, httptools).
  Django runs a sync view in one thread and its docs ask for `CONN_MAX_AGE` 0 under ASGI
  (a backend's pool instead, which needs psycopg-pool): a new PostgreSQL connection for
  every request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

from bench.http import Connection, HttpError
from bench.lanes import TimedSink
from bench.procs import cpu_seconds, pids_named, process_tree, settle
from bench.timing import Run, drive_http
from tests.support import (
    create_postgres_database,
    drop_postgres_database,
    flush_redis,
    free_port,
    stop_processes,
    wait_for_http,
)
from worker.processes import child_dies_with_parent

Server = Literal["gunicorn", "uvicorn"]

ROOT = Path(__file__).resolve().parent.parent
SITE = "bench.post_office_site"
REDIS_URL = os.environ.get("BENCH_POST_OFFICE_REDIS_URL", "redis://127.0.0.1:6379/9")
SENDS = 400
CONCURRENCY = 16
DELIVERED_TIMEOUT_SECONDS = 300.0
READY_TIMEOUT_SECONDS = 60.0
RECIPIENT_DOMAIN = "bench.example"


def recipient(index: int, prefix: str = "r") -> str:
    return f"{prefix}{index}@{RECIPIENT_DOMAIN}"


class Peer:
    """The peer's processes, each logging to a file of its own under `var_dir`."""

    def __init__(self, var_dir: Path, env: dict[str, str]) -> None:
        self.var_dir = var_dir
        self.env = env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """`python <args>` as process `name`; it dies with this process."""
        log = open(self.var_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen(
            [sys.executable, *args],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=child_dies_with_parent(),  # noqa: PLW1509 - no threads started yet
        )
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.var_dir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        stop_processes(self.processes.values())

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds used so far by each part (bench/run.py `_cpu_snapshot`)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "web": cpu_seconds(process_tree(self.processes["web"].pid)),
            "worker": cpu_seconds(process_tree(self.processes["worker"].pid)),
            "postgres": cpu_seconds(pids_named("postgres")),
            "redis": cpu_seconds(pids_named("redis-server")),
            "load_generator": usage.ru_utime + usage.ru_stime,
        }

    def settle(self) -> None:
        """Wait until the peer is idle (`bench.procs.settle`)."""
        settle(self.cpu_snapshot)


def _web_command(server: Server, port: int, concurrency: int) -> list[str]:
    if server == "gunicorn":
        # No access log: gunicorn's default.
        return ["-m", "gunicorn", f"{SITE}.wsgi:application", "--bind", f"127.0.0.1:{port}"] + [
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            str(concurrency),
        ]
    return ["-m", "uvicorn", f"{SITE}.asgi:application", "--host", "127.0.0.1"] + [
        "--port",
        str(port),
        "--no-access-log",
    ]


def _wait_for_file(path: Path, peer: Peer, name: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    process = peer.processes[name]
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}):\n{peer.log(name)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready in {READY_TIMEOUT_SECONDS}s:\n{peer.log(name)}")
        time.sleep(0.1)


async def _drive(
    base_url: str, sends: int, concurrency: int, started_at: dict[str, float], prefix: str = "r"
) -> Run:
    """`sends` POST /send over `concurrency` kept-alive connections (`drive_http`); when
    each request started, by recipient, into `started_at`."""

    async def one(connection: Connection, i: int) -> bool:
        to = recipient(i, prefix)
        started_at[to] = time.perf_counter()
        try:
            answer = await connection.request("POST", "/send", json_body={"to": to})
        except HttpError:
            return False
        return answer.status == 200

    return await drive_http(base_url, concurrency, sends, one)


def _percentile(values: list[float], p: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else None


def _wait_for_emails(sink: TimedSink, mark: int, count: int) -> None:
    deadline = time.monotonic() + DELIVERED_TIMEOUT_SECONDS
    while len(sink.arrivals(mark)) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def _measure(
    peer: Peer, sink: TimedSink, base_url: str, sends: int, concurrency: int, warmup: int
) -> dict[str, Any]:
    if warmup:
        mark = sink.mark()
        asyncio.run(_drive(base_url, warmup, concurrency, {}, prefix="w"))
        _wait_for_emails(sink, mark, warmup)
    peer.settle()
    before, mark = peer.cpu_snapshot(), sink.mark()
    started_at: dict[str, float] = {}
    first_request = time.perf_counter()
    run = asyncio.run(_drive(base_url, sends, concurrency, started_at))
    _wait_for_emails(sink, mark, sends)
    arrivals = sink.arrivals(mark)
    last = max((arrived for arrived, _ in arrivals), default=time.perf_counter())
    elapsed = last - first_request
    peer.settle()
    after = peer.cpu_snapshot()
    after_request = [
        arrived - started_at[to]
        for arrived, received in arrivals
        for to in received.recipients[:1]
        if to in started_at
    ]
    delivered = len(arrivals)
    per_email = {part: (after[part] - before[part]) * 1000 / max(1, delivered) for part in before}
    figures = run.figures()
    p50, p95 = _percentile(after_request, 0.50), _percentile(after_request, 0.95)
    return {
        "warmup_sends": warmup,
        "sends": sends,
        "errors": run.errors,
        "emails_delivered": delivered,
        "elapsed_s": round(elapsed, 3),
        "emails_per_s": round(delivered / elapsed, 1) if elapsed > 0 else 0.0,
        "requests_per_s": figures["throughput_per_s"],
        "p50_ms": figures["p50_ms"],
        "p95_ms": figures["p95_ms"],
        "cpu_ms_per_email": {
            **{part: round(ms, 2) for part, ms in per_email.items()},
            "total": round(sum(per_email.values()), 2),
        },
        "email_after_request_p50_s": round(p50, 3) if p50 is not None else None,
        "email_after_request_p95_s": round(p95, 3) if p95 is not None else None,
    }


def measure_post_office(
    sends: int,
    concurrency: int = CONCURRENCY,
    *,
    server: Server = "gunicorn",
    warmup: int | None = None,
) -> dict[str, Any]:
    """Start the peer, send `warmup` emails (not measured; by default `concurrency`, one per
    connection: each web thread's database connection opened, the template cached) and then
    `sends` emails through it at `concurrency`, stop it: the
    emails delivered per second from the first request until the last email arrived, the
    requests' rate and p50, each email's arrival after its request, and the CPU
    milliseconds per email of the web process, the worker, PostgreSQL, Redis and this
    process (the load generator and the SMTP server)."""
    with ExitStack() as cleanup:
        var_dir = Path(tempfile.mkdtemp(prefix="securesend-post-office-"))
        cleanup.callback(shutil.rmtree, var_dir, ignore_errors=True)
        database_url = create_postgres_database()
        cleanup.callback(drop_postgres_database, database_url)
        flush_redis(REDIS_URL)
        cleanup.callback(flush_redis, REDIS_URL)
        sink = cleanup.enter_context(TimedSink.running(free_port()))
        ready_file = var_dir / "worker.ready"
        peer = Peer(
            var_dir,
            {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
                "PYTHONUNBUFFERED": "1",
                "DJANGO_SETTINGS_MODULE": f"{SITE}.settings",
                "DATABASE_URL": database_url.replace("postgresql+psycopg://", "postgresql://"),
                "REDIS_URL": REDIS_URL,
                "SMTP_URL": sink.url,
                "DJANGO_CONN_MAX_AGE": "60" if server == "gunicorn" else "0",
                "POST_OFFICE_LOCK_FILE": str(var_dir / "post_office"),
                "BENCH_READY_FILE": str(ready_file),
            },
        )
        cleanup.callback(peer.stop)
        prepared = peer.spawn("prepare", "-m", f"{SITE}.prepare")
        if prepared.wait(120) != 0:
            raise RuntimeError(f"migrate failed ({prepared.returncode}):\n{peer.log('prepare')}")
        peer.spawn("worker", "-m", "celery", "-A", f"{SITE}.celery_app", "worker", "-c", "2")
        port = free_port()
        web = peer.spawn("web", *_web_command(server, port, concurrency))
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{base_url}/ready", web)
        except RuntimeError as e:
            raise RuntimeError(f"{e}:\n{peer.log('web')}") from None
        _wait_for_file(ready_file, peer, "worker")
        warmup = concurrency if warmup is None else warmup
        figures = _measure(peer, sink, base_url, sends, concurrency, warmup)
    return {"server": server, "concurrency": concurrency, **figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.post_office",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sends", type=int, default=SENDS, help=f"default {SENDS}")
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help=f"default {CONCURRENCY}"
    )
    parser.add_argument("--server", choices=["gunicorn", "uvicorn"], default="gunicorn")
    parser.add_argument(
        "--warmup", type=int, help="sends before the measured ones (default: --concurrency)"
    )
    args = parser.parse_args(argv)
    if args.sends < 1 or args.concurrency < 1 or (args.warmup or 0) < 0:
        parser.error("--sends and --concurrency must be at least 1, --warmup at least 0")
    figures = measure_post_office(
        args.sends, args.concurrency, server=args.server, warmup=args.warmup
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

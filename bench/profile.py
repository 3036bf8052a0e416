"""Profile the worker's half of a send, in this process, on this machine's PostgreSQL.

    .venv/bin/python -m bench.profile [--sends 300] [--no-profiler] [--all-frames]
                                      [--html bench/results/profile.html]

Seeds a database of its own (dropped afterwards), records a queued job for each draft as
the API does, runs what the send task runs for each job (`worker.sending.run_send_job`),
then delivers the notifications those sends queued (`delivery.drain`, to `.eml` files), each under
pyinstrument; prints both profiles, time and CPU per send, CPU per email and SQL
statements per send. `--no-profiler` measures the same without pyinstrument's overhead.
The API is profiled in place with py-spy while the benchmark runs (docs/performance.md).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pyinstrument import Profiler
from sqlalchemy import event

from bench.seed import seed_rows
from bench.stack import REDIS_URL
from tests.support import create_postgres_database, drop_postgres_database, flush_redis
from worker.domain import clock, delivery, jobs
from worker.domain.auth import Caller
from worker.migrate import upgrade_to_head
from worker.models import new_guid
from worker.payloads import SendJobV1
from worker.runtime import Runtime
from worker.sending import run_send_job
from worker.settings import Settings
from worker.transports import EmlDirectoryTransport

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--sends", type=int, default=300)
    parser.add_argument("--all-frames", action="store_true", help="show library frames too")
    parser.add_argument("--no-profiler", action="store_true", help="figures only, no profile")
    parser.add_argument("--html", default=str(ROOT / "bench" / "results" / "profile.html"))
    args = parser.parse_args(argv)

    database_url = create_postgres_database()
    settings = Settings(database_url=database_url, redis_url=REDIS_URL, smtp_url="")
    runtime = Runtime.build(settings)
    database = runtime.database
    try:
        upgrade_to_head(settings)
        rows = seed_rows(database, drafts=args.sends + 20, big_recipients=1)
        payloads = []
        with database.write_session() as session:
            for sender_id, guid in rows.drafts:
                job = SendJobV1.for_send(
                    job_id=new_guid(),
                    sender_guid=rows.sender_guids[sender_id],
                    message_guid=guid,
                    keys=runtime.keys,
                )
                payload = job.model_dump(mode="json", by_alias=True)
                caller = Caller(
                    user_id=sender_id, user_guid=rows.sender_guids[sender_id], session_id=0
                )
                jobs.open_send_job(
                    session.connection(),
                    caller=caller,
                    job_id=job.job_id,
                    message_guid=guid,
                    payload=payload,
                    lane=job.lane,
                    now=clock.now(),
                )
                payloads.append(payload)

        for payload in payloads[:20]:  # warm up: connections, templates, caches
            run_send_job(runtime, payload, redelivered=False)

        statements = 0

        def count(*_: object) -> None:
            nonlocal statements
            statements += 1

        event.listen(database.engine, "before_cursor_execute", count)
        timings = []
        profiler = Profiler(interval=0.0005)
        cpu_started = time.process_time()
        if not args.no_profiler:
            profiler.start()
        for payload in payloads[20:]:
            started = time.perf_counter()
            run = run_send_job(runtime, payload, redelivered=False)
            timings.append(time.perf_counter() - started)
            assert run.result["httpStatus"] == 200, run.result
        if not args.no_profiler:
            profiler.stop()
        cpu = time.process_time() - cpu_started
        event.remove(database.engine, "before_cursor_execute", count)

        # The other half of a send's work: delivering its notification (.eml files here).
        delivery_profiler = Profiler(interval=0.0005)
        transport = EmlDirectoryTransport(Path(tempfile.mkdtemp(prefix="securesend-profile-")))
        delivery_started = time.process_time()
        if not args.no_profiler:
            delivery_profiler.start()
        report = delivery.drain(
            database,
            delivery.Delivery([transport], runtime.pacing()),
            keys=runtime.keys,
            settings=settings,
            now=clock.now,
            budget_seconds=120,
        )
        if not args.no_profiler:
            delivery_profiler.stop()
        delivery_cpu = time.process_time() - delivery_started
    finally:
        runtime.close()
        drop_postgres_database(database_url)
        flush_redis(REDIS_URL)

    overhead = "without profiler" if args.no_profiler else "profiler included"
    if not args.no_profiler:
        print(profiler.output_text(unicode=True, color=False, show_all=args.all_frames))
        print(delivery_profiler.output_text(unicode=True, color=False, show_all=args.all_frames))
        html = Path(args.html)
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(profiler.output_html())
        print(f"profile: {html}")
    sends = len(timings)
    emails = len(report.sent)
    print(f"{emails} emails delivered: CPU {delivery_cpu / emails * 1000:.2f} ms each ({overhead})")
    print(
        f"{sends} sends: median {statistics.median(timings) * 1000:.2f} ms, "
        f"mean {statistics.mean(timings) * 1000:.2f} ms, "
        f"CPU of this process {cpu / sends * 1000:.2f} ms ({overhead}), "
        f"{statements / sends:.1f} SQL statements per send (BEGIN/COMMIT not counted)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

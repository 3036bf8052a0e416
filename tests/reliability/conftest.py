"""Stacks that the fault tests may break: their own PostgreSQL database (or a PostgreSQL
server of their own, which they stop and start), their own Redis (a server started for the
run on its own port, or a database of the machine's), their own SMTP sink, workers without
beat, and the settings that ship: every recovery is timed as a user would see it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from sqlalchemy import func, select

from tests.factories import World
from tests.reliability.partition import Partition
from tests.smtp_sink import SmtpSink
from tests.support import (
    Stack,
    StackConfig,
    create_postgres_database,
    drop_postgres_database,
    flush_redis,
    free_port,
    unavailable,
)
from worker.models import (
    DailyUsage,
    Delivery,
    EmailStatus,
    Message,
    MessageStatus,
    OutboxEmail,
    SendJob,
    User,
    WorkerHeartbeat,
)
from worker.settings import Settings

# Nothing tuned: the stacks of tests/support.py wait 20 s for a send; a user's, 30.
SHIPPED_ENV = {"SEND_WAIT_SECONDS": str(Settings.model_fields["send_wait_seconds"].default)}
REPORT_DIR = Path(os.environ.get("RELIABILITY_REPORT_DIR", "var/reliability"))


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, parents first."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        found.append(current)
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            queue.extend(int(c) for c in children)
    return found


class RedisServer:
    """A redis-server of the test's own, on its own port, that can be killed and started."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server", FileNotFoundError("not on PATH"))
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.2).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server", FileNotFoundError("not on PATH"))
    assert binary is not None
    return binary


class SentinelCluster:
    """A Redis master, one replica and three sentinels (`redis-server --sentinel`), all on
    127.0.0.1 in the test's folder; the sentinels take a master silent for a second for
    down (their own setting: Sentinel's default is 30 s), two of three agreeing."""

    MASTER = "securesend-master"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.master, self.replica = RedisServer(folder / "master"), RedisServer(folder / "replica")
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{port}/0" for port in self.sentinel_ports)

    def start(self) -> None:
        for server in (self.master, self.replica):
            server.folder.mkdir(parents=True, exist_ok=True)
        self.master.start()
        self.replica.start()
        redis.Redis(port=self.replica.port).replicaof("127.0.0.1", self.master.port)
        for number, port in enumerate(self.sentinel_ports):
            config = self.folder / f"sentinel-{number}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                f"sentinel failover-timeout {self.MASTER} 5000\n"
                f"sentinel parallel-syncs {self.MASTER} 1\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [_redis_binary(), str(config), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                known = [
                    redis.Redis(port=port, socket_timeout=0.5).sentinel_slaves(self.MASTER)
                    for port in self.sentinel_ports
                ]
                if (
                    all(known)
                    and redis.Redis(port=self.replica.port).info("replication")[
                        "master_link_status"
                    ]
                    == "up"
                ):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the sentinels did not see the replica")

    def master_port(self) -> int:
        sentinel = redis.Redis(port=self.sentinel_ports[0])
        address: Any = sentinel.sentinel_get_master_addr_by_name(self.MASTER)
        return int(address[1])

    def stop(self) -> None:
        for process in self.sentinels:
            process.kill()
            process.wait()
        self.master.kill()
        self.replica.kill()


@dataclass
class Fault:
    stack: Stack
    sink: SmtpSink

    def world(self, tag: str) -> World:
        world = World(self.stack, tag, limits={"dailyMessages": 5000, "maxRecipients": 50})
        return world.setup()

    def drafts(self, world: World, to: str, count: int) -> list[str]:
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda i: world.draft(to=[to], subject=f"m{i}"), range(count)))

    def wait_for_jobs(self, token: str, job_ids: list[str], timeout: float) -> dict[str, Any]:
        """Poll the jobs API until every job has finished; returns them by id."""
        deadline = time.monotonic() + timeout
        done: dict[str, Any] = {}
        with self.stack.client() as client:
            while len(done) < len(job_ids) and time.monotonic() < deadline:
                for job_id in job_ids:
                    if job_id in done:
                        continue
                    job = client.get(
                        f"/api/v1/jobs/{job_id}", headers={"x-sm-session-token": token}
                    ).json()
                    if job["status"] in ("succeeded", "failed"):
                        done[job_id] = job
                time.sleep(0.2)
        return done

    def kill_worker(self, name: str) -> float:
        """kill -9 the worker, its Celery process and its pool processes, as a lost host
        would; returns when (time.monotonic())."""
        self.signal_worker(name, signal.SIGKILL)
        return time.monotonic()

    def signal_worker(self, name: str, number: signal.Signals) -> None:
        """Send `number` to the worker, its Celery process and its pool processes."""
        for pid in descendants(self.stack.processes[name].pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

    def stop_worker(self, name: str) -> None:
        """SIGTERM to the worker's main process only, as `docker stop` or systemd do."""
        self.stack.processes[name].send_signal(signal.SIGTERM)

    def worker_id(self, name: str) -> str:
        """The id the worker `name` beats under (host.pid.random, pid its Celery
        process's), once it has beaten (20 s at most)."""
        pids = {str(pid) for pid in descendants(self.stack.processes[name].pid)}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with self.stack.database.read_session() as session:
                for worker_id in session.scalars(select(WorkerHeartbeat.id)):
                    if worker_id.split(".")[-2] in pids:
                        return worker_id
            time.sleep(0.2)
        raise AssertionError(f"no heartbeat from {name}")

    def report(self, name: str, figures: dict[str, Any]) -> None:
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        (REPORT_DIR / f"{name}.json").write_text(json.dumps(figures, indent=2))
        print(f"\n{name}: {json.dumps(figures)}")


def _fault_stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
    sink: SmtpSink,
    name: str,
    *,
    workers: int = 2,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """A stack on the shipped settings (and `env`), its workers without beat (nothing
    needs it)."""
    own_database = database_url is None
    database_url = database_url or create_postgres_database()
    try:
        config = StackConfig(
            name=name,
            database_url=database_url,
            redis_url=redis_url,
            env={**SHIPPED_ENV, "SMTP_URL": sink.url, **(env or {})},
        )
        stack = Stack.start(
            config,
            var_dir=tmp_path_factory.mktemp(name),
            api_port=free_port(),
            workers=workers,
            beat=False,
        )
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        if own_database:
            drop_postgres_database(database_url)


@pytest.fixture
def fault_sink() -> Iterator[SmtpSink]:
    with SmtpSink.running(free_port()) as sink:
        yield sink


FAULT_REDIS_URL = os.environ.get("FAULT_REDIS_URL", "redis://127.0.0.1:6379/12")


def _on_machine_redis(
    tmp_path_factory: pytest.TempPathFactory,
    sink: SmtpSink,
    name: str,
    *,
    workers: int,
    env: dict[str, str] | None = None,
    database_url: str | None = None,
) -> Iterator[Fault]:
    flush_redis(FAULT_REDIS_URL)
    try:
        for stack in _fault_stack(
            tmp_path_factory,
            FAULT_REDIS_URL,
            sink,
            name,
            workers=workers,
            env=env,
            database_url=database_url,
        ):
            yield Fault(stack, sink)
    finally:
        flush_redis(FAULT_REDIS_URL)


@pytest.fixture
def worker_fault(tmp_path_factory: pytest.TempPathFactory, fault_sink: SmtpSink) -> Iterator[Fault]:
    """Two workers on the machine's Redis (a database of their own) that a test may kill."""
    yield from _on_machine_redis(tmp_path_factory, fault_sink, "worker-fault", workers=2)


@pytest.fixture
def lone_worker_fault(
    tmp_path_factory: pytest.TempPathFactory, fault_sink: SmtpSink
) -> Iterator[Fault]:
    """One worker, which a test kills and replaces."""
    yield from _on_machine_redis(tmp_path_factory, fault_sink, "lone-worker", workers=1)


@pytest.fixture
def webhook_fault(
    tmp_path_factory: pytest.TempPathFactory, fault_sink: SmtpSink
) -> Iterator[Fault]:
    """One worker, which a test kills and replaces, allowed to post to the test's own
    webhook endpoint on 127.0.0.1 (every other setting shipped)."""
    yield from _on_machine_redis(
        tmp_path_factory,
        fault_sink,
        "webhook-fault",
        workers=1,
        env={"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1"},
    )


@pytest.fixture
def sentinel_fault(
    tmp_path_factory: pytest.TempPathFactory, fault_sink: SmtpSink
) -> Iterator[tuple[Fault, SentinelCluster]]:
    """Two workers and the API on Redis behind Sentinel (REDIS_URL lists the three
    sentinels), every setting of securesend's shipped."""
    cluster = SentinelCluster(tmp_path_factory.mktemp("sentinel"))
    try:
        cluster.start()
        for stack in _fault_stack(
            tmp_path_factory,
            cluster.url,
            fault_sink,
            "sentinel-fault",
            env={"REDIS_SENTINEL_MASTER": cluster.MASTER},
        ):
            yield Fault(stack, fault_sink), cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_fault(
    tmp_path_factory: pytest.TempPathFactory, fault_sink: SmtpSink
) -> Iterator[tuple[Fault, RedisServer]]:
    """A stack on a Redis server of its own, which the test may kill and start again."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        for stack in _fault_stack(tmp_path_factory, server.url, fault_sink, "redis-fault"):
            yield Fault(stack, fault_sink), server
    finally:
        server.kill()


def send_one(fault: Fault, token: str, guid: str) -> httpx.Response:
    """SendMessage of one draft, waiting as a caller waits."""
    with fault.stack.client() as client:
        return client.put(
            f"/api/v1/messages/{guid}/send",
            json={},
            headers={"x-sm-session-token": token},
            timeout=60,
        )


def send_all(
    fault: Fault, token: str, guids: list[str], *, on_progress: Any = None, concurrency: int = 16
) -> list[httpx.Response]:
    """SendMessage every draft from `concurrency` threads; `on_progress(n)` after each."""
    counter = {"n": 0}
    counting = threading.Lock()

    def send(guid: str) -> httpx.Response:
        response = send_one(fault, token, guid)
        with counting:
            counter["n"] += 1
            done = counter["n"]
        if on_progress is not None:
            on_progress(done)
        return response

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(send, guids))


def answered(fault: Fault, token: str, responses: list[httpx.Response]) -> dict[str, int]:
    """Every request got an answer: 200 now, or 202 and its job finishes later."""
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 202}, statuses
    accepted = [r.json()["jobId"] for r in responses if r.status_code == 202]
    finished = fault.wait_for_jobs(token, accepted, timeout=90)
    assert len(finished) == len(accepted), "some accepted jobs never finished"
    assert {j["httpStatus"] for j in finished.values()} <= {200}
    return {"answered_200": statuses[200], "answered_202": statuses[202]}


def sent_exactly_once(fault: Fault, sender: str, guids: list[str]) -> None:
    with fault.stack.database.read_session() as session:
        ids = list(
            session.scalars(
                select(Message.id).where(
                    Message.guid.in_(guids), Message.status == MessageStatus.SENT
                )
            )
        )
        assert len(ids) == len(guids), "a send was lost"
        deliveries = session.execute(
            select(Delivery.message_id, func.count())
            .where(Delivery.message_id.in_(ids))
            .group_by(Delivery.message_id)
        ).all()
        assert len(deliveries) == len(guids) and {n for _, n in deliveries} == {1}
        emails = session.scalar(select(func.count()).where(OutboxEmail.message_id.in_(ids)))
        assert emails == len(guids)
        sender_id = session.scalars(select(User.id).where(User.email == sender)).one()
        usage = session.scalars(select(DailyUsage).where(DailyUsage.user_id == sender_id)).one()
        assert usage.messages_sent == len(guids)  # quota used once per send
        failed_jobs = session.scalar(
            select(func.count()).where(SendJob.message_guid.in_(guids), SendJob.http_status != 200)
        )
        assert failed_jobs == 0


def emails_out(fault: Fault, guids: list[str], reader: str, timeout: float = 90) -> int:
    """Wait until every email is sent; returns how many arrived more than once."""
    deadline = time.monotonic() + timeout
    while True:
        with fault.stack.database.read_session() as session:
            pending = session.execute(
                select(
                    OutboxEmail.id,
                    OutboxEmail.status,
                    OutboxEmail.attempts,
                    OutboxEmail.claimed_until,
                    OutboxEmail.last_error,
                )
                .join(Message, Message.id == OutboxEmail.message_id)
                .where(Message.guid.in_(guids), OutboxEmail.status != EmailStatus.SENT)
            ).all()
        if not pending:
            break
        assert time.monotonic() < deadline, f"emails that never went out: {pending}"
        time.sleep(0.25)
    received = Counter(r.message["Message-ID"] for r in fault.sink.to(reader))
    assert len(received) == len(guids), "an email was lost"
    return sum(n - 1 for n in received.values())


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        unavailable("pg_ctl", FileNotFoundError("no /usr/lib/postgresql/*/bin/pg_ctl"))
    return found[-1].parent


class PostgresServer:
    """A PostgreSQL server of the test's own, in a folder of its own and on its own port,
    that the test may stop and start. PostgreSQL refuses to run as root: as root, it runs
    as the `postgres` user."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bin = _postgres_bin()
        self.folder = Path(tempfile.mkdtemp(prefix="securesend-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, timeout=timeout, capture_output=True)

    @property
    def data(self) -> str:
        return str(self.folder / "data")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create(self) -> None:
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync")
        self.start()
        admin = self.url("postgres").replace("+psycopg", "")
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute('CREATE DATABASE "securesend"')

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: the server ends every session at once and shuts down, as in a restart."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def database_fault(
    tmp_path_factory: pytest.TempPathFactory, fault_sink: SmtpSink
) -> Iterator[tuple[Fault, PostgresServer]]:
    """Two workers and the API on a PostgreSQL server of their own, which the test may
    stop and start."""
    server = PostgresServer()
    flush_redis(FAULT_REDIS_URL)
    try:
        server.create()
        for stack in _fault_stack(
            tmp_path_factory,
            FAULT_REDIS_URL,
            fault_sink,
            "database-fault",
            database_url=server.url("securesend"),
        ):
            yield Fault(stack, fault_sink), server
    finally:
        server.destroy()
        flush_redis(FAULT_REDIS_URL)


@pytest.fixture
def partition_fault(
    tmp_path_factory: pytest.TempPathFactory, fault_sink: SmtpSink
) -> Iterator[tuple[Fault, Partition]]:
    """Two workers on the machine's PostgreSQL and Redis: `worker` on this host, `cutoff`
    on a host of its own (a network namespace) whose network the test cuts and heals,
    reaching PostgreSQL, Redis and the SMTP sink through it; every setting shipped."""
    database_url = create_postgres_database()
    redis_port = int(FAULT_REDIS_URL.split(":")[2].split("/")[0])
    postgres_port = int(database_url.split("@", 1)[1].split("/")[0].rsplit(":", 1)[1])
    try:
        with Partition.running([postgres_port, redis_port, fault_sink.port]) as partition:
            for fault in _on_machine_redis(
                tmp_path_factory,
                fault_sink,
                "partition-fault",
                workers=1,
                database_url=database_url,
            ):
                far = partition.host_address
                fault.stack.start_worker(
                    "cutoff",
                    launcher=partition.launcher,
                    env={
                        "DATABASE_URL": database_url.replace("127.0.0.1", far),
                        "REDIS_URL": FAULT_REDIS_URL.replace("127.0.0.1", far),
                        "SMTP_URL": fault_sink.url.replace("127.0.0.1", far),
                    },
                )
                fault.stack.wait_for_log("cutoff", "ready.")
                yield fault, partition
    finally:
        drop_postgres_database(database_url)

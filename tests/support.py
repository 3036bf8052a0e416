"""A live stack for tests: `securesend api` and `securesend worker` as real processes,
plus typed helpers to drive the HTTP API and look at the database."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from worker.db import Database
from worker.domain import clock
from worker.domain.fixtures import load_fixture_dict
from worker.domain.secrets import Keys
from worker.migrate import upgrade_to_head
from worker.pacing import RedisPaceStore
from worker.processes import child_dies_with_parent
from worker.settings import Settings

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def unavailable(what: str, error: Exception) -> NoReturn:
    """A service a test (or the benchmark) needs is missing: the test is skipped, with the
    reason, on a developer's machine, and fails when `CI` is set; outside pytest (the
    benchmark) it raises RuntimeError."""
    reason = f"{what} is not reachable ({type(error).__name__}: {error})"
    if "PYTEST_CURRENT_TEST" not in os.environ:
        raise RuntimeError(reason) from error
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI needs it", pytrace=False)
    pytest.skip(reason)


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], grace: float = 20) -> None:
    """SIGTERM to each that runs, then wait for all; one still running after `grace`
    seconds is killed."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_postgres_database() -> str:
    """A new, empty database on this machine's PostgreSQL; its URL."""
    import psycopg

    name = f"securesend_test_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as e:
        unavailable("PostgreSQL at " + POSTGRES_ADMIN_URL, e)
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def migrated_database(backend: str, var_dir: Path) -> Iterator[tuple[Settings, Database]]:
    """A new database brought up to date, on `backend` ("sqlite": a file under `var_dir`;
    "postgres": a database of its own on this machine's server, dropped afterwards), with
    the settings that reach it."""
    url = create_postgres_database() if backend == "postgres" else ""
    try:
        settings = Settings(
            var_dir=var_dir, database_url=url, public_base_url="https://securesend.test"
        )
        upgrade_to_head(settings)
        database = Database(settings.effective_database_url, pool_size=settings.database_pool_size)
        try:
            yield settings, database
        finally:
            database.dispose()
    finally:
        if url:
            drop_postgres_database(url)


def flush_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).flushdb()
    except redis.RedisError as e:
        unavailable("Redis at " + url, e)


@contextmanager
def redis_pace_store(tag: str) -> Iterator[RedisPaceStore]:
    """A pace store on the tests' Redis under a prefix of `tag`'s own (the session's live
    stacks use that database: it is not flushed), its keys deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=3)
    prefix = f"test:{tag}:pace:"
    try:
        client.ping()
    except redis.RedisError as e:
        unavailable("Redis at " + REDIS_TEST_URL, e)
    try:
        yield RedisPaceStore(client, prefix=prefix)
    finally:
        keys = list(client.scan_iter(prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


# Fast retries, so that tests of failing mail servers and webhook endpoints finish in
# seconds; webhook endpoints on 127.0.0.1 (the tests' receivers) allowed.
MAIL_RETRY_ENV = {
    "MAIL_RETRY_BASE_SECONDS": "0.4",
    "MAIL_RETRY_MAX_SECONDS": "2",
    "MAIL_MAX_ATTEMPTS": "6",
    "WEBHOOK_RETRY_SCHEDULE": "0.3,0.3,0.3,0.3,0.3,0.3,0.3",
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1",
}


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[Any]:
    """`securesend <args>` in a process of its own; its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_python(
    code: str, *, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -c <code>` in a fresh process (nothing imported yet), in `cwd`, with exactly
    `env`; its output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


READY_TIMEOUT_SECONDS = 60


def group_fixture(name: str, **overrides: Any) -> dict[str, Any]:
    """A group as `securesend load` takes it (SPEC 5): every feature on but CRA, generous
    limits; `features` (merged into those) and any other field as given."""
    features = {
        "fyeo": True,
        "confidential": True,
        "messageExpiry": True,
        "inviteUser": True,
        "cra": False,
        "sendToContacts": True,
        "recall": True,
    }
    features.update(overrides.pop("features", {}))
    return {
        "name": name,
        "dailyMessages": 100,
        "dailyInvites": 20,
        "maxRecipients": 50,
        "maxExpiryDays": 30,
        "features": features,
        **overrides,
    }


# --- assertions on answers -----------------------------------------------------------------


def assert_error_body(
    got_status: int, body: dict[str, Any], status: int, code: str, message: str
) -> dict[str, Any]:
    """An answer is the error `code` with HTTP `status` and exactly `message`; returns its
    `responseStatus` (for `errors[]` and `meta`)."""
    assert got_status == status, body
    response_status = body["responseStatus"]
    assert response_status["errorCode"] == code, response_status
    assert response_status["message"] == message, response_status
    return dict(response_status)


def assert_error(response: httpx.Response, status: int, code: str, message: str) -> dict[str, Any]:
    """`assert_error_body` for an HTTP response."""
    assert response.status_code == status, response.text
    return assert_error_body(response.status_code, response.json(), status, code, message)


def named_recipients(response_status: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The recipients an error names: (errorCode, fieldName, meta.email) of each entry."""
    return [(e["errorCode"], e["fieldName"], e["meta"]["email"]) for e in response_status["errors"]]


def wait_for_http(
    url: str, process: subprocess.Popen[bytes], *, timeout: float = READY_TIMEOUT_SECONDS
) -> None:
    """Wait until `url` answers 200 while `process` (the server) keeps running."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}: no answer in {timeout}s")
        time.sleep(0.1)


@dataclass(frozen=True)
class StackConfig:
    name: str
    database_url: str
    redis_url: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Stack:
    config: StackConfig
    var_dir: Path
    api_port: int
    env: dict[str, str]
    settings: Settings
    database: Database
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def keys(self) -> Keys:
        """The keys the stack's processes seal and digest with (the same SECRET_KEY)."""
        return Keys(self.settings.secret_key)

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        config: StackConfig,
        *,
        var_dir: Path,
        api_port: int,
        workers: int = 1,
        beat: bool = False,
    ) -> Stack:
        """Migrate, then start the API and `workers` worker processes (with `beat`, the
        last one also runs Celery beat, which nothing needs) and wait until all are
        ready."""
        env = {
            **os.environ,
            "VAR_DIR": str(var_dir),
            "DATABASE_URL": config.database_url,
            "REDIS_URL": config.redis_url,
            "SEND_WAIT_SECONDS": "20",
            "PUBLIC_BASE_URL": "https://securesend.test",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **config.env,
        }
        settings = Settings(
            var_dir=var_dir,
            database_url=config.database_url,
            redis_url=config.redis_url,
            redis_sentinel_master=config.env.get("REDIS_SENTINEL_MASTER", ""),
            public_base_url="https://securesend.test",
            smtp_url=config.env.get("SMTP_URL", ""),
        )
        upgrade_to_head(settings)
        stack = cls(
            config=config,
            var_dir=var_dir,
            api_port=api_port,
            env=env,
            settings=settings,
            database=Database(
                settings.effective_database_url, pool_size=settings.database_pool_size
            ),
        )
        names = ["worker"] if workers == 1 else [f"worker{i}" for i in range(1, workers + 1)]
        try:
            for name in names:
                stack.start_worker(name, *(["--beat"] if beat and name == names[-1] else []))
            stack._spawn("api", "api", "--port", str(api_port))
            stack._wait_for_api()
            for name in names:
                stack.wait_for_log(name, "ready.")
        except BaseException:
            stack.stop()
            raise
        return stack

    def _spawn(
        self,
        name: str,
        *args: str,
        launcher: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """`securesend <args>` as process `name`, logging to var/<name>.log; `launcher`
        runs it (`ip netns exec <ns>`: the exec'd process is securesend's), `env` changes
        its environment."""
        running = self.processes.get(name)
        if running is not None and running.poll() is None:
            raise RuntimeError(f"{name} is running already: a second would outlive the test")
        log = open(self.var_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen(
            [*launcher, sys.executable, "-m", "worker.cli", *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a test can kill it whole
            # and it dies with the test run, however that ends (a run killed never runs
            # its fixtures' finalizers: its stacks would take the next run's tasks). Linux
            # signals a child when the *thread* that started it ends: a process a helper
            # thread starts (a worker replaced a second later) is stopped by the test alone.
            preexec_fn=(
                child_dies_with_parent()
                if threading.current_thread() is threading.main_thread()
                else None
            ),
        )
        self.processes[name] = process
        return process

    def start_worker(
        self,
        name: str,
        *extra: str,
        launcher: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        return self._spawn(name, "worker", "--concurrency", "2", *extra, launcher=launcher, env=env)

    def log(self, name: str) -> str:
        path = self.var_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, name: str, text: str, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(name):
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.log(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready in {timeout}s:\n{self.log(name)}")
            time.sleep(0.1)

    def _wait_for_api(self) -> None:
        try:
            wait_for_http(self.url("/api/v1/public/ping"), self.processes["api"])
        except RuntimeError as e:
            raise RuntimeError(f"api did not start ({e}):\n{self.log('api')}") from None

    def stop(self) -> None:
        stop_processes(self.processes.values())
        self.database.dispose()

    # --- HTTP ------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url(""), timeout=30)

    def login(self, email: str, password: str) -> str:
        with self.client() as client:
            response = client.post(
                "/api/v1/login", json={"username": email, "password": password, "cookieless": True}
            )
        assert response.status_code == 200, response.text
        return str(response.json()["sessionToken"])

    def draft(self, token: str, **fields: Any) -> str:
        """PreCreateMessage (New) + SaveMessage with `fields`; returns the GUID."""
        headers = {"x-sm-session-token": token}
        with self.client() as client:
            created = client.post("/api/v1/messages/", json={"actionCode": "New"}, headers=headers)
            assert created.status_code == 200, created.text
            guid = str(created.json()["messageGuid"])
            saved = client.put(f"/api/v1/messages/{guid}/save", json=fields, headers=headers)
            assert saved.status_code == 200, saved.text
        return guid

    def deliveries(self, token: str, guid: str) -> httpx.Response:
        """GET /messages/{guid}/deliveries as the holder of `token`."""
        with self.client() as client:
            return client.get(
                f"/api/v1/messages/{guid}/deliveries", headers={"x-sm-session-token": token}
            )

    def send(self, token: str, guid: str, **body: Any) -> httpx.Response:
        with self.client() as client:
            return client.put(
                f"/api/v1/messages/{guid}/send",
                json=body,
                headers={"x-sm-session-token": token},
            )

    # --- data ------------------------------------------------------------------------------

    def load(self, data: dict[str, Any]) -> None:
        with self.database.write_session() as session:
            load_fixture_dict(session, data, keys=Keys(self.settings.secret_key), now=clock.now())

    def make_group(self, tag: str, **overrides: Any) -> str:
        group = group_fixture(f"group-{tag}", **overrides)
        self.load({"groups": [group]})
        return str(group["name"])

    def make_user(self, tag: str, *, group: str | None = None, **fields: Any) -> tuple[str, str]:
        """A user in `group`, or in a new group of its own; returns (email, password)."""
        email = fields.pop(
            "email", f"{fields.pop('name', 'user')}-{tag}-{secrets.token_hex(3)}@example.com"
        )
        password = fields.pop("password", f"pw-{secrets.token_hex(6)}")
        self.load(
            {
                "users": [
                    {
                        "email": email,
                        "password": password,
                        "firstName": fields.pop("firstName", "Test"),
                        "lastName": fields.pop("lastName", "User"),
                        "group": group or self.make_group(f"{tag}-{secrets.token_hex(3)}"),
                        **fields,
                    }
                ]
            }
        )
        return email, password

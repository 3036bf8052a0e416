"""One runtime per process: what it holds for its lifetime (settings, the database, the
keys derived from SECRET_KEY, Redis, the mail transport, a Celery publisher), built where
the process starts and passed explicitly from there (arq's `ctx`).

- a worker's pool process: `worker_process_init` (worker/celery_app.py), closed at its
  shutdown; its tasks take it with `current()` and pass it on;
- a worker's main process: `worker_ready`, for its lifeline;
- the API: `create_app` (api_shim/app.py), closed by the FastAPI lifespan;
- the CLI: each command that needs one.

Importing this module builds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from celery import Celery

from worker.celery_factory import create_app
from worker.db import Database
from worker.domain.delivery import MailTransport
from worker.domain.secrets import Keys
from worker.settings import Settings
from worker.transports import make_transport


@dataclass
class Runtime:
    settings: Settings
    database: Database
    keys: Keys
    celery: Celery  # publishes tasks (a worker's: its own app)
    redis: redis.Redis | None  # the broker's Redis, for what securesend keeps there itself
    _mail: MailTransport | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings, *, celery: Celery | None = None) -> Runtime:
        if settings.is_sqlite:
            settings.var_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            settings=settings,
            database=Database(
                settings.effective_database_url, pool_size=settings.database_pool_size
            ),
            keys=Keys(settings.secret_key),
            celery=celery or create_app(settings, results=False),
            redis=(
                redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
                if settings.redis_url
                else None
            ),
        )

    def mail(self) -> MailTransport:
        """The process's one mail transport, opened on first use (an SMTP connection is
        reused for every email the process delivers)."""
        if self._mail is None:
            self._mail = make_transport(self.settings)
        return self._mail

    def close(self) -> None:
        """Close the mail transport and the database's connections."""
        mail, self._mail = self._mail, None
        if mail is not None:
            mail.close()
        self.database.dispose()
        if self.redis is not None:
            self.redis.close()


_current: Runtime | None = None


def install(runtime: Runtime) -> Runtime:
    """Make `runtime` this process's (a worker process does it when it starts)."""
    global _current
    _current = runtime
    return runtime


def uninstall() -> None:
    """Close this process's runtime (a worker process does it when it stops)."""
    global _current
    runtime, _current = _current, None
    if runtime is not None:
        runtime.close()


def current() -> Runtime:
    """This process's runtime; raises RuntimeError where none was installed."""
    if _current is None:
        raise RuntimeError("no runtime: this process did not start as a securesend worker")
    return _current

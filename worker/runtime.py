"""One runtime per process: what it holds for its lifetime (settings, the database, the
keys derived from SECRET_KEY, Redis, the mail relays and their pace, the webhook
transport, where attachment chunks are kept, a Celery publisher), built where the
process starts and passed explicitly from there (arq's `ctx`).

- a worker's pool process: `worker_process_init` (worker/celery_app.py), closed at its
  shutdown; its tasks take it with `current()` and pass it on;
- a worker's main process: `worker_ready`, for its lifeline;
- the API: `create_app` (api_shim/app.py), closed by the FastAPI lifespan;
- the CLI: each command that needs one.

Importing this module builds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import redis
from celery import Celery

from worker.attachment_files import make_chunk_store
from worker.celery_factory import create_app
from worker.db import Database
from worker.domain.attachments import ChunkStore
from worker.domain.delivery import MailTransport, RetryPolicy, WebhookDelivery
from worker.domain.pace import Pacing
from worker.domain.secrets import Keys
from worker.pacing import make_pace_store
from worker.redis_clients import redis_client
from worker.settings import Settings
from worker.transports import make_relays
from worker.webhook_transport import HttpPoster


@dataclass
class Runtime:
    settings: Settings
    database: Database
    keys: Keys
    celery: Celery  # publishes tasks (a worker's: its own app)
    redis: redis.Redis | None  # the broker's Redis, for what securesend keeps there itself
    _relays: list[MailTransport] | None = field(default=None, repr=False)
    _pacing: Pacing | None = field(default=None, repr=False)
    _chunk_store: ChunkStore | None = field(default=None, repr=False)
    _webhooks: WebhookDelivery | None = field(default=None, repr=False)

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
                redis_client(settings, socket_timeout=2, socket_connect_timeout=2)
                if settings.redis_url
                else None
            ),
        )

    def relays(self) -> list[MailTransport]:
        """The process's transport to each relay, in order, each opened on first use (an
        SMTP connection is reused for every email the process delivers)."""
        if self._relays is None:
            self._relays = make_relays(self.settings)
        return self._relays

    def pacing(self) -> Pacing:
        """The process's view of the pace shared by every worker (worker.domain.pace)."""
        if self._pacing is None:
            self._pacing = Pacing(
                make_pace_store(self.settings, self.redis),
                self.settings.pace_limits,
                relay_count=len(self.settings.smtp_urls) or 1,
            )
        return self._pacing

    def webhooks(self) -> WebhookDelivery:
        """What the process delivers webhook events with: its HTTP connection pool
        (opened on first use) and the retry schedule."""
        if self._webhooks is None:
            settings = self.settings
            self._webhooks = WebhookDelivery(
                HttpPoster(settings),
                RetryPolicy.for_webhooks(settings),
                timedelta(days=settings.webhook_disable_after_days),
            )
        return self._webhooks

    def chunk_store(self) -> ChunkStore:
        """Where attachment chunks are kept: the database, or ATTACHMENTS_DIR."""
        if self._chunk_store is None:
            self._chunk_store = make_chunk_store(self.settings)
        return self._chunk_store

    def close(self) -> None:
        """Close the mail relays and the database's connections."""
        relays, self._relays = self._relays or [], None
        for relay in relays:
            relay.close()
        if self._webhooks is not None:
            self._webhooks.poster.close()
            self._webhooks = None
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

"""The one settings object, read once from the environment (and an optional `.env`)."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.domain.pace import Limits, Rate, parse_domain_limits

# The built-in email templates: templates/ of the repository, installed as the package
# `securesend_templates` (pyproject.toml), so a wheel finds them wherever it is installed.
BUILTIN_TEMPLATES_DIR = Path(str(resources.files("securesend_templates")))
DEFAULT_SECRET_KEY = "change-me-development-only"


class Settings(BaseSettings):
    """Everything configurable, with embedded defaults that need no server installed."""

    # A setting refused at start says which and why, never the values it was given: they
    # hold SECRET_KEY and the passwords in DATABASE_URL, REDIS_URL and SMTP_URL.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    securesend_env: Literal["development", "production"] = "development"
    var_dir: Path = Field(default=Path("var"), description="where embedded-mode state lives")
    database_url: str = ""
    redis_url: str = ""
    # Redis behind Sentinel (docs/reliability.md, "Redis failover"): REDIS_URL lists the
    # sentinels in kombu's form, `sentinel://h1:26379/0;sentinel://h2:26379/0`, the
    # master's password (if any) in the first (`sentinel://:pw@h1:26379/0`); these name
    # the master and the sentinels' own password.
    redis_sentinel_master: str = ""
    redis_sentinel_password: str = ""
    smtp_url: str = ""
    mail_from: str = "securesend <no-reply@securesend.local>"
    # Bounces (worker.domain.bounces): every email's return path is this address tagged
    # with the email (VERP), where `securesend bounces` listens; empty: MAIL_FROM's, and
    # no bounce is read. A hard bounce suppresses the address for SUPPRESSION_DAYS, this
    # many soft ones in a row too.
    mail_bounce_address: str = ""
    suppression_days: int = 30
    soft_bounces_before_suppression: int = 5
    public_base_url: str = "http://127.0.0.1:8080"
    send_wait_seconds: float = 30.0
    session_idle_minutes: int = 60
    secret_key: str = DEFAULT_SECRET_KEY
    log_level: str = "INFO"
    log_format_override: Literal["", "json", "text"] = Field(default="", alias="LOG_FORMAT")
    templates_dir: Path | None = None
    # PostgreSQL connections each process keeps open (and up to 20 more while busy, closed
    # on return). The API runs up to 40 transactions at once (its thread pool): below the
    # concurrency it sees, connections are opened and closed all the time, and each new
    # one is a forked backend (~1-3 ms of CPU; docs/performance.md). Keep processes x
    # (pool + 20) under the server's max_connections.
    database_pool_size: int = 20
    # The embedded broker polls its folder; lower is faster and busier.
    embedded_broker_poll_seconds: float = 0.02
    # Outbox delivery: retries of 4xx replies and connection errors back off exponentially
    # (with full jitter) from the base up to the cap, for at most this many attempts.
    mail_retry_base_seconds: float = 30.0
    mail_retry_max_seconds: float = 900.0
    mail_max_attempts: int = 8
    smtp_timeout_seconds: float = 30.0
    # Pace (worker/domain/pace.py, README "Sending at the relay's pace"): a rate for each
    # relay of SMTP_URL ("25/s", "1000/min"; empty: none) and for recipient domains
    # ("gmail.com=10/s,outlook.com=5/s"), held across every worker.
    mail_rate_limit: str = ""
    mail_domain_rate_limits: str = ""
    # A drain of the outbox starts this long after the send that asks for it, so that a
    # burst of sends shares one drain (docs/performance.md); 0 starts it at once.
    mail_batch_window_seconds: float = 0.2
    # Reliability (docs/reliability.md). Every task time limit stays below the broker's
    # visibility timeout, or Redis hands a running task to a second worker.
    broker_visibility_timeout_seconds: int = 300
    send_task_time_limit_seconds: int = 45
    mail_task_time_limit_seconds: int = 120
    worker_soft_shutdown_seconds: float = 20.0
    sweep_interval_seconds: float = 5.0
    job_republish_after_seconds: float = 10.0
    max_send_attempts: int = 3
    # Every worker writes a heartbeat this often; one silent for WORKER_DEAD_AFTER is
    # dead, and any live worker takes back what it held (worker/lifeline.py).
    heartbeat_seconds: float = 1.0
    worker_dead_after_seconds: float = 5.0
    # How long Redis keeps a task's result for `result.get()` by direct enqueuers; the job
    # row keeps the answer for RETENTION_DAYS. A send's result is a few KB (docs/reliability.md).
    result_ttl_seconds: int = 3600
    # Attachments (SPEC 9): their sealed chunks live in the database unless this names a
    # folder every API process can reach (a shared volume). FORWARDED_ALLOW_IPS: the
    # proxies (comma-separated addresses, or *) whose X-Forwarded-Proto/-Host say the
    # address clients call, for the absolute `uploadUri`s PreCreateAttachments answers.
    attachments_dir: Path | None = None
    forwarded_allow_ips: str = ""
    # Webhooks (SPEC 8, README "Webhooks"): the waits, in seconds, after each failed
    # attempt (Svix's schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; one attempt
    # more than waits); how long an endpoint has to answer; an endpoint failing for this
    # many days is disabled; private and loopback addresses are refused unless allowed.
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    webhook_timeout_seconds: float = 15.0
    webhook_disable_after_days: float = 5.0
    webhook_allow_private_networks: bool = False
    # Jobs, emails and sessions older than this are deleted (hourly; 0 keeps everything).
    retention_days: int = 7
    # Drafts nobody saved or added a file to for this long are deleted with their files
    # (0 keeps them; nothing is pruned while RETENTION_DAYS is 0).
    draft_retention_days: int = 30

    @model_validator(mode="after")
    def _time_limits_below_visibility_timeout(self) -> Settings:
        longest = max(self.send_task_time_limit_seconds, self.mail_task_time_limit_seconds)
        if longest >= self.broker_visibility_timeout_seconds:
            raise ValueError(
                "task time limits must be below BROKER_VISIBILITY_TIMEOUT_SECONDS, or a "
                "running task is delivered to a second worker"
            )
        return self

    @model_validator(mode="after")
    def _dead_after_several_heartbeats(self) -> Settings:
        if self.worker_dead_after_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                "WORKER_DEAD_AFTER_SECONDS must be at least two HEARTBEAT_SECONDS, or a "
                "live worker whose heartbeat was late is taken for dead"
            )
        return self

    @model_validator(mode="after")
    def _sentinel_master_named(self) -> Settings:
        if self.uses_sentinel and not self.redis_sentinel_master:
            raise ValueError(
                "REDIS_URL lists sentinels: REDIS_SENTINEL_MASTER must name the master"
            )
        if self.redis_url and not self.redis_url.startswith(
            ("redis://", "rediss://", "sentinel://")
        ):
            raise ValueError("REDIS_URL must be redis://…, rediss://… or sentinel://…;sentinel://…")
        return self

    @model_validator(mode="after")
    def _bounce_address_readable(self) -> Settings:
        local, at, domain = self.mail_bounce_address.rpartition("@")
        if self.mail_bounce_address and not (at and local and domain and "+" not in local):
            raise ValueError("MAIL_BOUNCE_ADDRESS must be an address without '+', bounces@domain")
        return self

    @model_validator(mode="after")
    def _limits_readable(self) -> Settings:
        self.pace_limits  # noqa: B018 - raises ValueError on a malformed rate
        self.webhook_retry_delays  # noqa: B018 - raises ValueError on a malformed schedule
        for url in self.smtp_urls:
            if not url.startswith(("smtp://", "smtps://")):
                raise ValueError(f"SMTP_URL: {url.split('@')[-1]!r} is not smtp://… or smtps://…")
        return self

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> Settings:
        if self.securesend_env == "production" and self.secret_key == DEFAULT_SECRET_KEY:
            raise ValueError("SECRET_KEY must be set when SECURESEND_ENV=production")
        return self

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        """WEBHOOK_RETRY_SCHEDULE as seconds (ValueError when malformed)."""
        try:
            delays = tuple(
                float(part) for part in self.webhook_retry_schedule.split(",") if part.strip()
            )
        except ValueError:
            delays = (-1.0,)
        if any(d < 0 for d in delays):
            raise ValueError(
                "WEBHOOK_RETRY_SCHEDULE: seconds before each retry, comma-separated (5,300,…)"
            )
        return delays

    @property
    def log_format(self) -> str:
        if self.log_format_override:
            return self.log_format_override
        return "json" if self.securesend_env == "production" else "text"

    @property
    def smtp_urls(self) -> list[str]:
        """The relays of `SMTP_URL`, in the order they are tried (comma-separated)."""
        return [url.strip() for url in self.smtp_url.split(",") if url.strip()]

    @property
    def pace_limits(self) -> Limits:
        return Limits(
            relay=Rate.parse(self.mail_rate_limit) if self.mail_rate_limit.strip() else None,
            domains=parse_domain_limits(self.mail_domain_rate_limits),
        )

    @property
    def session_idle(self) -> timedelta:
        return timedelta(minutes=self.session_idle_minutes)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'securesend.sqlite3').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def uses_redis(self) -> bool:
        return bool(self.redis_url)

    @property
    def uses_sentinel(self) -> bool:
        return self.redis_url.startswith("sentinel://")

    @property
    def broker_url(self) -> str:
        return self.redis_url or "securesend-fs://"

    @property
    def result_backend_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        return f"db+sqlite:///{(self.var_dir / 'celery-results.sqlite3').resolve()}"

    @property
    def embedded_broker_dir(self) -> Path:
        return (self.var_dir / "broker").resolve()

    @property
    def outbox_dir(self) -> Path:
        return (self.var_dir / "outbox").resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()

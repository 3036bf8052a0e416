"""Logging for every securesend process: text for people, JSON lines in production.

Records carry ids and codes only (job id, message guid, result code, the Celery task);
never a body, password, CRA code or token. `LOG_FORMAT=json|text` overrides the default
(JSON when `SECURESEND_ENV=production`).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from worker.settings import Settings

# Extra fields a log call may attach (`extra={...}`) that the JSON format carries.
CONTEXT_FIELDS = (
    "job_id",
    "message_guid",
    "code",
    "email_id",
    "http_status",
    "recipients",
    "emails_queued",
)


def _current_task() -> tuple[str | None, str | None]:
    try:
        from celery import current_task

        task = current_task
        if task is not None and task.request.id:
            return str(task.request.id), str(task.name)
    except Exception:  # noqa: BLE001 - logging must never fail
        pass
    return None, None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        task_id, task_name = _current_task()
        if task_id:
            entry["task_id"], entry["task"] = task_id, task_name
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # A task's success is logged by what it ran (a send's own line, a drain's summary):
    # Celery's "Task … succeeded in …" line repeats it for every task, at the worker's
    # cost. Its failures and retries (ERROR, WARNING) are still logged.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)

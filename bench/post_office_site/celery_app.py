"""The peer's Celery app: configured from Django's settings (`CELERY_*`), post_office's
tasks found by `autodiscover_tasks`, as Celery's and post_office's docs set it up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.post_office_site.settings")

app = Celery("post_office_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _note_ready(**_: Any) -> None:
    """Write the worker's pid to BENCH_READY_FILE, if set: the benchmark waits for it
    (the worker's "ready." log line needs --loglevel INFO, and the worker runs with
    Celery's default, WARNING)."""
    path = os.environ.get("BENCH_READY_FILE")
    if path:
        Path(path).write_text(str(os.getpid()))


worker_ready.connect(_note_ready, weak=False)

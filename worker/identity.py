"""This worker's name: set in its main process before the pool forks, so that its pool
processes claim emails and hold the drain flag in the same name (worker.lifeline)."""

from __future__ import annotations

import os
import secrets
import socket

_worker_id: str | None = None


def worker_id() -> str | None:
    """This worker's id; None outside a worker (the API, a script)."""
    return _worker_id


def new_worker_id() -> str:
    """Name this process the worker `host.pid.random` (unique across restarts)."""
    global _worker_id
    _worker_id = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"
    return _worker_id

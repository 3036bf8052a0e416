"""The operations, one module per area."""

from __future__ import annotations

from typing import Any

from api_shim.registry import Operation
from api_shim.routes import attachments, auth, messages, public, send, user


def all_operations() -> list[Operation[Any]]:
    return [
        *public.OPERATIONS,
        *auth.OPERATIONS,
        *user.OPERATIONS,
        *messages.OPERATIONS,
        *send.OPERATIONS,
        *attachments.OPERATIONS,
    ]

"""The operations, one module per area."""

from __future__ import annotations

from api_shim.operations import Operation
from api_shim.routes import auth, messages, public, send, user


def all_operations() -> list[Operation]:
    return [
        *public.OPERATIONS,
        *auth.OPERATIONS,
        *user.OPERATIONS,
        *messages.OPERATIONS,
        *send.OPERATIONS,
    ]

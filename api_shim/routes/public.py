"""Ping: no session needed."""

from __future__ import annotations

from typing import Any

from api_shim.dtos import Empty
from api_shim.operations import Call, Operation


async def ping(_: Call) -> dict[str, Any]:
    return {}


OPERATIONS = [
    Operation(
        "Ping",
        (("GET", "/public/ping"),),
        Empty,
        ping,
        authenticated=False,
        summary="Is the service up (no session needed)",
    ),
]

"""Ping: no session needed."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

from api_shim.dtos import Empty
from api_shim.pipeline import Call
from api_shim.registry import Operation
from api_shim.responses import PingResponse

# The Secure Messaging API version served, and the oldest a client may still speak: the
# vendor does not publish what its clients check this against, so nobody is turned away.
API_VERSION = 8
MIN_SUPPORTED_API_VERSION = 1


@cache
def _release() -> str:
    try:
        return version("securesend")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


async def ping(_: Call[Empty]) -> PingResponse:
    return PingResponse(
        build=_release(), version=API_VERSION, min_supported_version=MIN_SUPPORTED_API_VERSION
    )


OPERATIONS = (
    Operation(
        "Ping",
        (("GET", "/public/ping"),),
        Empty,
        ping,
        authenticated=False,
        summary="Is the service up (no session needed)",
        response=PingResponse,
    ),
)

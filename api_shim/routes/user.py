"""What the caller's account holds: GetUserSettings and GetUserQuotas."""

from __future__ import annotations

from api_shim.dtos import Empty
from api_shim.pipeline import Call
from api_shim.registry import Operation
from api_shim.responses import QuotasResponse, UserSettingsResponse
from worker.domain import clock, quotas, users


async def get_user_settings(call: Call[Empty]) -> UserSettingsResponse:
    settings = await call.read(lambda session, caller: users.user_settings(session, caller=caller))
    return UserSettingsResponse.of(settings)


async def get_user_quotas(call: Call[Empty]) -> QuotasResponse:
    now = clock.now()
    left = await call.read(
        lambda session, caller: quotas.user_quotas(session, caller=caller, now=now)
    )
    return QuotasResponse.of(left)


OPERATIONS = (
    Operation(
        "GetUserSettings",
        (("GET", "/user/settings"),),
        Empty,
        get_user_settings,
        summary="The caller's account (the vendor's SDKs read it right after Login)",
        response=UserSettingsResponse,
    ),
    Operation(
        "GetUserQuotas",
        (("GET", "/user/quotas"),),
        Empty,
        get_user_quotas,
        summary="Sends and invites left today",
        response=QuotasResponse,
    ),
)

"""What the caller's account holds: GetUserSettings and GetUserQuotas."""

from __future__ import annotations

from typing import Any

from api_shim.dtos import Empty
from api_shim.operations import Call, Operation
from api_shim.responses import QuotasResponse, UserSettingsResponse
from worker.domain import clock, quotas, users


async def get_user_settings(call: Call) -> dict[str, Any]:
    return await call.read(users.user_settings)


async def get_user_quotas(call: Call) -> dict[str, Any]:
    return await call.read(quotas.user_quotas, now=clock.now())


OPERATIONS = [
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
]

"""Login and Logout."""

from __future__ import annotations

from typing import Any

from api_shim.dtos import Empty, LoginRequest
from api_shim.operations import SESSION_COOKIE, Call, Operation, Reply
from worker.domain import auth, clock
from worker.domain.errors import ApiError


async def login(call: Call) -> Reply:
    dto: LoginRequest = call.dto
    result = await call.services.write(
        auth.login, username=dto.username, password=dto.password, now=clock.now()
    )
    if isinstance(result, ApiError):
        raise result
    return Reply(
        body={"sessionToken": result.session_token, "userServiceGuid": result.user_guid},
        set_cookie=None if dto.cookieless else (SESSION_COOKIE, result.session_token),
    )


async def logout(call: Call) -> dict[str, Any]:
    await call.services.write(auth.logout, caller=call.user, now=clock.now())
    return {}


OPERATIONS = [
    Operation("Login", (("POST", "/login"),), LoginRequest, login, authenticated=False),
    Operation("Logout", (("POST", "/logout"),), Empty, logout),
]

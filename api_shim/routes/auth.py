"""Login and Logout."""

from __future__ import annotations

from typing import Any

from api_shim.dtos import Empty, LoginRequest
from api_shim.operations import SESSION_COOKIE, Call, Operation, Reply
from api_shim.responses import LoginResponse
from worker.domain import auth, clock, errors
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
    await call.write(auth.logout, now=clock.now())
    return {}


OPERATIONS = [
    Operation(
        "Login",
        (("POST", "/login"),),
        LoginRequest,
        login,
        authenticated=False,
        summary="Open a session",
        response=LoginResponse,
        errors=(
            errors.USER_NOT_FOUND,
            errors.INVALID_CREDENTIALS,
            errors.USER_DISABLED,
            errors.LOGIN_LOCKED,
        ),
    ),
    Operation("Logout", (("POST", "/logout"),), Empty, logout, summary="End the session"),
]

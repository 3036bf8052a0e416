"""Login (by password or by authentication token), authentication tokens, and Logout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from api_shim.dtos import (
    AuthenticateRequest,
    Empty,
    ExpireAuthenticationTokenRequest,
    LoginRequest,
    NewAuthenticationTokenRequest,
)
from api_shim.operations import SESSION_COOKIE, Call, Operation, Reply
from api_shim.responses import (
    AuthenticateResponse,
    LoginResponse,
    NewAuthenticationTokenResponse,
)
from worker.domain import auth, clock, errors
from worker.domain.auth import LoginResult


def _session_opened(result: LoginResult, *, cookieless: bool) -> Reply:
    return Reply(
        body={"sessionToken": result.session_token, "userServiceGuid": result.user_guid},
        set_cookie=None if cookieless else (SESSION_COOKIE, result.session_token),
    )


async def _authenticate(call: Call, token: str, *, cookieless: bool) -> Reply:
    result = await call.services.write(
        auth.authenticate, token=token, now=clock.now(), keys=call.services.keys
    )
    return _session_opened(result, cookieless=cookieless)


async def login(call: Call) -> Reply:
    dto: LoginRequest = call.dto
    if dto.username is None and dto.authentication_token is not None:
        # The vendor's PHP SDK logs in with a token through Login.
        return await _authenticate(call, dto.authentication_token, cookieless=dto.cookieless)
    if dto.username is None or dto.password is None:
        missing = "Username" if dto.username is None else "Password"
        raise errors.validation_error(missing, "must not be empty", code="NotNull")
    result = await call.services.write(
        auth.login,
        username=dto.username,
        password=dto.password,
        now=clock.now(),
        keys=call.services.keys,
    )
    return _session_opened(result, cookieless=dto.cookieless)


async def authenticate(call: Call) -> Reply:
    dto: AuthenticateRequest = call.dto
    return await _authenticate(call, dto.authentication_token, cookieless=dto.cookieless)


async def new_authentication_token(call: Call) -> dict[str, Any]:
    dto: NewAuthenticationTokenRequest = call.dto
    token = await call.write(
        auth.new_authentication_token,
        valid_for=timedelta(days=dto.authentication_token_max_days),
        now=clock.now(),
        keys=call.services.keys,
    )
    return {"authenticationToken": token}


async def expire_authentication_token(call: Call) -> dict[str, Any]:
    dto: ExpireAuthenticationTokenRequest = call.dto
    await call.write(
        auth.expire_authentication_token,
        token=dto.authentication_token,
        keys=call.services.keys,
    )
    return {}


async def expire_authentication_tokens(call: Call) -> dict[str, Any]:
    await call.write(auth.expire_authentication_tokens)
    return {}


async def logout(call: Call) -> dict[str, Any]:
    await call.write(auth.logout, now=clock.now())
    return {}


LOGIN_ERRORS = (
    errors.USER_NOT_FOUND,
    errors.INVALID_CREDENTIALS,
    errors.USER_DISABLED,
    errors.LOGIN_LOCKED,
)

OPERATIONS = [
    Operation(
        "Login",
        (("POST", "/login"),),
        LoginRequest,
        login,
        authenticated=False,
        summary="Open a session with a username and password (or an authentication token)",
        response=LoginResponse,
        errors=LOGIN_ERRORS,
    ),
    Operation(
        "Authenticate",
        (("POST", "/authenticate"),),
        AuthenticateRequest,
        authenticate,
        authenticated=False,
        summary="Open a session with an authentication token",
        response=AuthenticateResponse,
        errors=(errors.INVALID_CREDENTIALS, errors.USER_DISABLED),
    ),
    Operation(
        "GetNewAuthenticationToken",
        (("GET", "/user/authenticationtoken"),),
        NewAuthenticationTokenRequest,
        new_authentication_token,
        summary="A long-lived token that opens sessions of the caller's (Authenticate)",
        response=NewAuthenticationTokenResponse,
    ),
    Operation(
        "ExpireAuthenticationToken",
        (("DELETE", "/user/authenticationtoken"),),
        ExpireAuthenticationTokenRequest,
        expire_authentication_token,
        summary="Revoke one of the caller's authentication tokens",
    ),
    Operation(
        "ExpireAuthenticationTokens",
        (("DELETE", "/user/authenticationtokens"),),
        Empty,
        expire_authentication_tokens,
        summary="Revoke all of the caller's authentication tokens",
    ),
    Operation("Logout", (("POST", "/logout"),), Empty, logout, summary="End the session"),
]

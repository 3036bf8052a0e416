"""Login (by password or by authentication token), authentication tokens, and Logout."""

from __future__ import annotations

from datetime import timedelta

from api_shim.dtos import (
    AuthenticateRequest,
    Empty,
    ExpireAuthenticationTokenRequest,
    LoginRequest,
    NewAuthenticationTokenRequest,
)
from api_shim.pipeline import SESSION_COOKIE, Call, Reply
from api_shim.registry import Operation
from api_shim.responses import (
    AuthenticateResponse,
    EmptyResponse,
    LoginResponse,
    NewAuthenticationTokenResponse,
)
from api_shim.services import Services
from worker.domain import auth, clock, errors
from worker.domain.auth import LoginResult
from worker.domain.errors import FieldError


def _session_opened(body: LoginResponse, *, cookieless: bool) -> Reply[LoginResponse]:
    return Reply(
        body=body,
        set_cookie=None if cookieless else (SESSION_COOKIE, body.session_token),
    )


async def _authenticate(services: Services, token: str) -> LoginResult:
    return await services.write(auth.authenticate, token=token, now=clock.now(), keys=services.keys)


async def login(call: Call[LoginRequest]) -> Reply[LoginResponse]:
    dto = call.dto
    if dto.username is None and dto.authentication_token is not None:
        # The vendor's PHP SDK logs in with a token through Login.
        result = await _authenticate(call.services, dto.authentication_token)
        return _session_opened(LoginResponse.of(result), cookieless=dto.cookieless)
    if dto.username is None or dto.password is None:
        missing = "Username" if dto.username is None else "Password"
        raise errors.validation_error(FieldError("NotNull", missing, "must not be empty"))
    result = await call.services.write(
        auth.login,
        username=dto.username,
        password=dto.password,
        now=clock.now(),
        keys=call.services.keys,
    )
    return _session_opened(LoginResponse.of(result), cookieless=dto.cookieless)


async def authenticate(call: Call[AuthenticateRequest]) -> Reply[LoginResponse]:
    result = await _authenticate(call.services, call.dto.authentication_token)
    return _session_opened(AuthenticateResponse.of(result), cookieless=call.dto.cookieless)


async def new_authentication_token(
    call: Call[NewAuthenticationTokenRequest],
) -> NewAuthenticationTokenResponse:
    valid_for = timedelta(days=call.dto.authentication_token_max_days)
    now, keys = clock.now(), call.services.keys
    token = await call.write(
        lambda session, caller: auth.new_authentication_token(
            session, caller=caller, valid_for=valid_for, now=now, keys=keys
        )
    )
    return NewAuthenticationTokenResponse(authentication_token=token)


async def expire_authentication_token(
    call: Call[ExpireAuthenticationTokenRequest],
) -> EmptyResponse:
    token, keys = call.dto.authentication_token, call.services.keys
    await call.write(
        lambda session, caller: auth.expire_authentication_token(
            session, caller=caller, token=token, keys=keys
        )
    )
    return EmptyResponse()


async def expire_authentication_tokens(call: Call[Empty]) -> EmptyResponse:
    await call.write(
        lambda session, caller: auth.expire_authentication_tokens(session, caller=caller)
    )
    return EmptyResponse()


async def logout(call: Call[Empty]) -> EmptyResponse:
    now = clock.now()
    await call.write(lambda session, caller: auth.logout(session, caller=caller, now=now))
    return EmptyResponse()


LOGIN_ERRORS = (
    errors.USER_NOT_FOUND,
    errors.INVALID_CREDENTIALS,
    errors.USER_DISABLED,
    errors.LOGIN_LOCKED,
)

OPERATIONS = (
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
)

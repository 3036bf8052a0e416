"""What the vendor's SDKs need around SendMessage (SPEC 2 and 4): GetUserSettings, Ping,
token login, folded slashes, nulls as "not given" and ServiceStack dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update

from tests.factories import World
from tests.support import Stack, assert_error
from worker.models import AuthenticationToken, Message, User, UserState

SESSION = "x-sm-session-token"


def _get(stack: Stack, path: str, token: str | None = None) -> httpx.Response:
    with stack.client() as client:
        return client.get(path, headers={SESSION: token} if token else {})


def test_user_settings_on_every_route(stack: Stack, unique: str) -> None:
    email, password = stack.make_user(unique, firstName="Ada", lastName="Lovelace")
    token = stack.login(email, password)
    answers = [
        _get(stack, path, token)
        for path in (
            "/api/v1/user/settings",
            "/api/user/settings",
            "/json/reply/GetUserSettings",
            "/api/GetUserSettings",
        )
    ]
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.json() == answers[0].json() for a in answers)
    settings = answers[0].json()
    assert settings["emailAddress"] == email.casefold()
    assert settings["state"] == "Active"
    assert (settings["firstName"], settings["lastName"]) == ("Ada", "Lovelace")
    registered = datetime.fromisoformat(settings["registrationDate"].replace("Z", "+00:00"))
    assert settings["registrationDate"].endswith("Z")
    assert abs(datetime.now(UTC) - registered) < timedelta(minutes=10)
    assert_error(
        _get(stack, "/api/v1/user/settings"), 401, "811", "The user session is no longer valid."
    )


def test_ping_names_the_release_and_api_versions(sqlite_stack: Stack) -> None:
    ping = _get(sqlite_stack, "/api/public/ping").json()
    assert set(ping) == {"build", "version", "minSupportedVersion"}
    assert ping["build"] and isinstance(ping["build"], str)
    assert ping["version"] == 8 and ping["minSupportedVersion"] <= ping["version"]


def test_repeated_slashes_fold_into_one(sqlite_stack: Stack, unique: str) -> None:
    """The PHP SDK joins base URL and route with an extra slash."""
    email, password = sqlite_stack.make_user(unique)
    reader, _ = sqlite_stack.make_user(unique, name="reader")
    with sqlite_stack.client() as client:
        login = client.post("/api//login", json={"username": email, "password": password})
        token = login.json()["sessionToken"]
        headers = {SESSION: token}
        created = client.post("/api//v1/messages", json={"actionCode": "New"}, headers=headers)
        guid = created.json()["messageGuid"]
        saved = client.put(
            f"/api//messages/{guid}/save", json={"to": [reader], "subject": "s"}, headers=headers
        )
        sent = client.put(f"/api///messages//{guid}//send", json={}, headers=headers)
        ping = client.get("/api//public//ping")
    assert [login.status_code, created.status_code, saved.status_code] == [200, 200, 200]
    assert sent.status_code == 200 and sent.json()["notificationSent"] is True
    assert ping.status_code == 200


def test_a_trailing_slash_is_routed_as_without_never_redirected(
    sqlite_stack: Stack, unique: str
) -> None:
    email, password = sqlite_stack.make_user(unique)
    with sqlite_stack.client() as client:
        token = client.post("/api/login/", json={"username": email, "password": password}).json()[
            "sessionToken"
        ]
        settings = client.get("/api/v1/user/settings/", headers={SESSION: token})
        job = client.get("/api/v1/jobs/0%2F", headers={SESSION: token})
        ping = client.get("/api/public/ping/")
    assert settings.status_code == 200 and settings.json()["emailAddress"] == email.casefold()
    assert ping.status_code == 200
    assert job.status_code == 400  # "0" is no job id: answered, not redirected
    assert job.json()["responseStatus"]["errorCode"] == "ValidationException"


def test_null_for_any_property_means_not_given(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader = world.user("reader")
    headers = {SESSION: world.token}
    with stack.client() as client:
        # What the Java SDK sends: every optional property null, plus its own three.
        created = client.post(
            "/api/v1/messages",
            json={
                "actionCode": "New",
                "parentGuid": None,
                "password": None,
                "authAuditToken": None,
                "campainGuid": None,
                "externalMessageId": None,
                "requestRoute": "/messages",
                "requestParams": {},
                "requestMethod": "POST",
            },
            headers=headers,
        )
        assert created.status_code == 200, created.text
        guid = created.json()["messageGuid"]
        first = client.put(
            f"/api/v1/messages/{guid}/save",
            json={"to": [reader], "subject": "kept", "body": "kept too", "bodyFormat": "Html"},
            headers=headers,
        )
        nulls = client.put(
            f"/api/v1/messages/{guid}/save",
            json={
                "messageGuid": guid,
                "to": None,
                "cc": None,
                "bcc": None,
                "subject": None,
                "body": None,
                "bodyFormat": None,
                "expiryDate": None,
                "messageOptions": {"allowForward": None, "fyeoType": None},
            },
            headers=headers,
        )
        saved = client.get(f"/api/v1/messages/{guid}", headers=headers).json()
        sent = client.put(
            f"/api/v1/messages/{guid}/send",
            json={
                "messageGuid": guid,
                "password": None,
                "inviteNewUsers": None,
                "sendEmailNotification": None,
                "craCode": None,
                "notificationFormats": None,
            },
            headers=headers,
        )
    assert first.status_code == nulls.status_code == 200, nulls.text
    assert (saved["subject"], saved["body"], saved["bodyFormat"]) == ("kept", "kept too", "Html")
    assert [p["email"] for p in saved["to"]] == [reader.casefold()]
    assert saved["messageOptions"]["allowForward"] is True
    assert saved["messageOptions"]["fyeoType"] == "Disabled"
    # null notification flag = true, null formats = both
    assert sent.status_code == 200, sent.text
    assert sent.json()["notificationSent"] is True
    assert sent.json()["notificationBodyText"] and sent.json()["notificationBodyHtml"]


def test_servicestack_dates_are_accepted_and_answered_in_iso(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    guid = world.draft(to=[world.user("reader")])
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    millis = int(when.timestamp() * 1000)
    headers = {SESSION: world.token}

    def saved_expiry(value: object) -> str | None:
        with stack.client() as client:
            saved = client.put(
                f"/api/v1/messages/{guid}/save", json={"expiryDate": value}, headers=headers
            )
            assert saved.status_code == 200, saved.text
            expiry = client.get(f"/api/v1/messages/{guid}", headers=headers).json()["expiryDate"]
        return expiry  # type: ignore[no-any-return]

    expected = when.isoformat().replace("+00:00", "Z")
    assert saved_expiry(f"/Date({millis})/") == expected
    # The offset is the sender's zone, for display: the instant is the same.
    assert saved_expiry(f"/Date({millis}-0500)/") == expected
    assert saved_expiry(f"\\/Date({millis}+0100)\\/") == expected
    assert saved_expiry(when.astimezone().isoformat()) == expected
    assert saved_expiry(None) == expected  # null: not given, kept
    assert saved_expiry("") is None  # an empty string removes it
    with stack.client() as client:
        bad = client.put(
            f"/api/v1/messages/{guid}/save", json={"expiryDate": "/Date(abc)/"}, headers=headers
        )
    assert bad.status_code == 400
    assert bad.json()["responseStatus"]["errors"][0]["fieldName"] == "ExpiryDate"


def test_authentication_tokens_open_sessions(stack: Stack, unique: str) -> None:
    email, password = stack.make_user(unique)
    token = stack.login(email, password)
    with stack.client() as client:
        issued = [
            client.get(
                "/api/v1/user/authenticationtoken?authenticationTokenMaxDays=2",
                headers={SESSION: token},
            ).json()["authenticationToken"]
            for _ in range(3)
        ]
        by_authenticate = client.post(
            "/api/v1/authenticate", json={"authenticationToken": issued[0], "cookieless": False}
        )
        by_login = client.post("/api/login", json={"authenticationToken": issued[0]})
        settings = client.get(
            "/api/v1/user/settings",
            headers={SESSION: by_authenticate.json()["sessionToken"]},
        )
        unknown = client.post("/api/v1/authenticate", json={"authenticationToken": "nope"})
        # Revoke one (the Java SDK sends it in the query string and the body), then all.
        revoked_one = client.request(
            "DELETE",
            f"/api/v1/user/authenticationtoken?authenticationToken={issued[0]}",
            json={"authenticationToken": issued[0], "requestMethod": "DELETE"},
            headers={SESSION: token},
        )
        after_one = [
            client.post("/api/v1/authenticate", json={"authenticationToken": t}).status_code
            for t in issued
        ]
        revoked_all = client.delete("/api/v1/user/authenticationtokens", headers={SESSION: token})
        after_all = [
            client.post("/api/v1/authenticate", json={"authenticationToken": t}).status_code
            for t in issued
        ]
    assert by_authenticate.status_code == 200, by_authenticate.text
    assert set(by_authenticate.json()) == {"sessionToken", "userServiceGuid"}
    assert "ss-id" in by_authenticate.cookies  # not cookieless
    assert by_login.status_code == 200 and by_login.json()["sessionToken"]
    assert settings.json()["emailAddress"] == email.casefold()
    assert_error(unknown, 403, "803", "Invalid credentials.")
    anonymous = _get(stack, "/api/v1/user/authenticationtoken")  # a client without cookies
    assert_error(anonymous, 401, "811", "The user session is no longer valid.")
    assert revoked_one.status_code == revoked_all.status_code == 200
    assert after_one == [403, 200, 200]
    assert after_all == [403, 403, 403]


def test_authentication_tokens_expire_and_are_stored_only_as_digests(
    stack: Stack, unique: str
) -> None:
    email, password = stack.make_user(unique)
    disabled, disabled_pw = stack.make_user(unique, name="later-disabled")
    with stack.client() as client:
        token = client.get(
            "/api/v1/user/authenticationtoken", headers={SESSION: stack.login(email, password)}
        ).json()["authenticationToken"]
        other = client.get(
            "/api/v1/user/authenticationtoken",
            headers={SESSION: stack.login(disabled, disabled_pw)},
        ).json()["authenticationToken"]
    with stack.database.read_session() as session:
        rows = session.scalars(select(AuthenticationToken)).all()
        stored = {(r.token_hash, r.expires_at - r.created_at) for r in rows}
    assert token not in {h for h, _ in stored} and len(token) >= 40
    assert all(not h.startswith(token[:8]) for h, _ in stored)
    assert timedelta(days=14) in {valid for _, valid in stored}  # the default

    with stack.database.write_session() as session:
        session.execute(
            update(User).where(User.email == disabled.casefold()).values(state=UserState.DISABLED)
        )
    with stack.client() as client:
        of_a_disabled_user = client.post(
            "/api/v1/authenticate", json={"authenticationToken": other}
        )
    with stack.database.write_session() as session:
        session.execute(
            update(AuthenticationToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with stack.client() as client:
        expired = client.post("/api/v1/authenticate", json={"authenticationToken": token})
        too_long = client.get(
            "/api/v1/user/authenticationtoken?authenticationTokenMaxDays=100000",
            headers={SESSION: stack.login(email, password)},
        )
    assert_error(of_a_disabled_user, 403, "918", "User is disabled.")
    assert_error(expired, 403, "803", "Invalid credentials.")
    assert too_long.status_code == 400
    assert too_long.json()["responseStatus"]["errors"][0]["fieldName"] == (
        "AuthenticationTokenMaxDays"
    )


def test_login_needs_a_username_or_a_token(sqlite_stack: Stack) -> None:
    with sqlite_stack.client() as client:
        nothing = client.post("/api/v1/login", json={"password": "x", "cookieless": True})
        no_password = client.post("/api/v1/login", json={"username": "a@example.com"})
    for response, field in ((nothing, "Username"), (no_password, "Password")):
        body = assert_error(response, 400, "ValidationException", f"'{field}' must not be empty")
        assert body["errors"][0]["errorCode"] == "NotNull"


def test_precreate_for_a_reply_keeps_the_conversation(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader_email, reader_pw = stack.make_user(unique, name="reader", group=world.group)
    root = world.sent_message([reader_email])
    reader = world.as_user(reader_email, reader_pw)
    with stack.client() as client:
        reply = client.post(
            "/api/v1/messages/",
            json={"actionCode": "Reply", "parentGuid": root},
            headers={SESSION: reader.token},
        ).json()["messageGuid"]
    with stack.database.read_session() as session:
        conversations = dict(
            session.execute(
                select(Message.guid, Message.conversation_guid).where(
                    Message.guid.in_([root, reply])
                )
            ).all()
        )
    assert conversations == {root: root, reply: root}

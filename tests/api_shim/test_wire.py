"""SPEC 2 wire conventions, through real HTTP against a live API process."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import Stack


@pytest.fixture
def sender(sqlite_stack: Stack, unique: str) -> tuple[str, str]:
    email, password = sqlite_stack.make_user(unique)
    reader, _ = sqlite_stack.make_user(unique, name="reader")
    token = sqlite_stack.login(email, password)
    guid = sqlite_stack.draft(token, to=[reader], subject="wire", body="b")
    return token, guid


def _dashed_upper(guid: str) -> str:
    g = guid.upper()
    return f"{g[:8]}-{g[8:12]}-{g[12:16]}-{g[16:20]}-{g[20:]}"


def test_property_names_bind_case_insensitively(sqlite_stack: Stack, unique: str) -> None:
    email, password = sqlite_stack.make_user(unique)
    with sqlite_stack.client() as client:
        for body in (
            {"username": email, "password": password},
            {"UserName": email, "Password": password},
            {"USERNAME": email, "PASSWORD": password},
        ):
            response = client.post("/api/v1/login", json=body)
            assert response.status_code == 200, response.text
            assert set(response.json()) == {"sessionToken", "userServiceGuid"}


def test_guid_forms_and_predefined_routes(sqlite_stack: Stack, sender: tuple[str, str]) -> None:
    token, guid = sender
    headers = {"x-sm-session-token": token}
    with sqlite_stack.client() as client:
        by_path = client.get(f"/api/v1/messages/{_dashed_upper(guid)}", headers=headers)
        by_body = client.post(
            "/json/reply/GetMessage", json={"MESSAGEGUID": _dashed_upper(guid)}, headers=headers
        )
        by_api = client.post("/api/GetMessage", json={"messageGuid": guid}, headers=headers)
        sent = client.post(
            "/api/SendMessage", json={"MessageGuid": _dashed_upper(guid)}, headers=headers
        )
        again = client.put("/json/reply/SendMessage", json={"messageGuid": guid}, headers=headers)
    assert by_path.status_code == by_body.status_code == by_api.status_code == 200
    assert by_path.json()["guid"] == guid  # returned in N form, lower case
    assert by_path.json() == by_body.json() == by_api.json()
    assert sent.status_code == 200 and again.json() == sent.json()


def test_json_suffix_and_format_query(sqlite_stack: Stack, sender: tuple[str, str]) -> None:
    token, guid = sender
    headers = {"x-sm-session-token": token}
    with sqlite_stack.client() as client:
        plain = client.get(f"/api/v1/messages/{guid}", headers=headers)
        suffixed = client.get(f"/api/v1/messages/{guid}.json", headers=headers)
        query = client.get(f"/api/v1/messages/{guid}?format=json", headers=headers)
        ping = client.get("/api/v1/public/ping.json")
    assert plain.json() == suffixed.json() == query.json()
    assert suffixed.headers["content-type"] == "application/json; charset=utf-8"
    assert ping.status_code == 200 and set(ping.json()) == {
        "build",
        "version",
        "minSupportedVersion",
    }


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/v1/public/ping.xml", {}),
        ("/api/v1/public/ping?format=xml", {}),
        ("/api/v1/public/ping", {"accept": "application/xml"}),
        ("/api/v1/public/ping", {"accept": "text/csv, text/html"}),
    ],
)
def test_unsupported_format_is_406(sqlite_stack: Stack, path: str, headers: dict[str, str]) -> None:
    with sqlite_stack.client() as client:
        response = client.get(path, headers=headers)
    assert response.status_code == 406
    assert response.json()["responseStatus"]["errorCode"] == "NotAcceptable"


def test_accept_headers_that_allow_json(sqlite_stack: Stack) -> None:
    with sqlite_stack.client() as client:
        for accept in ("application/json", "*/*", "text/html, */*;q=0.8", ""):
            assert client.get("/api/v1/public/ping", headers={"accept": accept}).status_code == 200


def test_jsonp_wraps_success_and_errors_with_status_200(
    sqlite_stack: Stack, sender: tuple[str, str]
) -> None:
    token, guid = sender
    with sqlite_stack.client() as client:
        ok = client.get(
            f"/api/v1/messages/{guid}?callback=app.onMessage",
            headers={"x-sm-session-token": token},
        )
        error = client.get(f"/api/v1/messages/{guid}?callback=$cb_1")
    assert ok.status_code == 200
    assert ok.headers["content-type"] == "application/javascript; charset=utf-8"
    assert ok.text.startswith("app.onMessage(") and ok.text.endswith(");")
    assert json.loads(ok.text[len("app.onMessage(") : -2])["guid"] == guid
    assert error.status_code == 200
    assert error.text.startswith("$cb_1(")
    assert json.loads(error.text[len("$cb_1(") : -2])["responseStatus"]["errorCode"] == "811"


@pytest.mark.parametrize(
    "callback", ["alert(1)//", "<script>", "a b", "1abc", "x" * 65, "cb;evil", ""]
)
def test_invalid_jsonp_callback_is_400_and_never_reflected(
    sqlite_stack: Stack, callback: str
) -> None:
    with sqlite_stack.client() as client:
        response = client.get("/api/v1/public/ping", params={"callback": callback})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json()["responseStatus"]["errorCode"] == "ValidationException"
    if callback:
        assert callback not in response.text


def test_malformed_json_is_serialization_exception(
    sqlite_stack: Stack, sender: tuple[str, str]
) -> None:
    token, guid = sender
    with sqlite_stack.client() as client:
        for raw in (b"{not json", b"[1,2]", b"\xff\xfe", b'"text"', b"\t", b" \r\n"):
            response = client.put(
                f"/api/v1/messages/{guid}/send",
                content=raw,
                headers={"x-sm-session-token": token, "content-type": "application/json"},
            )
            assert response.status_code == 400, raw
            assert response.json()["responseStatus"]["errorCode"] == "SerializationException"


def test_wrong_types_invalid_guid_and_unknown_enum_are_validation_errors(
    sqlite_stack: Stack, sender: tuple[str, str]
) -> None:
    token, guid = sender
    headers = {"x-sm-session-token": token}
    with sqlite_stack.client() as client:
        response = client.put(
            f"/api/v1/messages/{guid}/send",
            json={"inviteNewUsers": {"a": 1}, "notificationFormats": ["Pdf"], "craCode": 5},
            headers=headers,
        )
        bad_guid = client.put("/api/v1/messages/not-a-guid/send", json={}, headers=headers)
        bad_action = client.post("/api/v1/messages/", json={"actionCode": "Shout"}, headers=headers)
    assert response.status_code == 400
    status = response.json()["responseStatus"]
    assert status["errorCode"] == "ValidationException"
    assert {e["fieldName"] for e in status["errors"]} == {
        "InviteNewUsers",
        "NotificationFormats",
        "CraCode",
    }
    assert bad_guid.status_code == 400
    assert bad_guid.json()["responseStatus"]["errors"][0]["fieldName"] == "MessageGuid"
    assert bad_action.status_code == 400
    assert bad_action.json()["responseStatus"]["errors"][0]["fieldName"] == "ActionCode"


def test_session_from_header_bearer_and_cookie(sqlite_stack: Stack, unique: str) -> None:
    email, password = sqlite_stack.make_user(unique)
    with sqlite_stack.client() as client:
        login = client.post("/api/v1/login", json={"username": email, "password": password})
        token = login.json()["sessionToken"]
        assert login.cookies.get("ss-id") == token
        via_cookie = client.get("/api/v1/messages/" + "0" * 32)  # cookie jar sends ss-id
    with sqlite_stack.client() as fresh:
        cookieless = fresh.post(
            "/api/v1/login", json={"username": email, "password": password, "cookieless": True}
        )
        assert "ss-id" not in cookieless.cookies
        via_header = fresh.get(
            "/api/v1/messages/" + "0" * 32, headers={"x-sm-session-token": token}
        )
        via_bearer = fresh.get(
            "/api/v1/messages/" + "0" * 32, headers={"authorization": f"Bearer {token}"}
        )
        anonymous = fresh.get("/api/v1/messages/" + "0" * 32)
    # Authenticated: the message is not found (404); anonymous: the session is invalid.
    assert via_cookie.status_code == via_header.status_code == via_bearer.status_code == 404
    assert anonymous.status_code == 401


def test_unknown_routes_and_methods_have_servicestack_bodies(sqlite_stack: Stack) -> None:
    with sqlite_stack.client() as client:
        unknown = client.get("/api/v1/nowhere/at/all")
        unknown_op = client.post("/json/reply/NoSuchOperation", json={})
        wrong_method = client.delete("/api/v1/login")
    for response in (unknown, unknown_op, wrong_method):
        assert response.status_code in (404, 405)
        assert set(response.json()["responseStatus"]) == {"errorCode", "message", "errors", "meta"}


def test_login_errors_have_exact_messages(sqlite_stack: Stack, unique: str) -> None:
    email, password = sqlite_stack.make_user(unique)
    disabled, disabled_pw = sqlite_stack.make_user(unique, name="off", state="disabled")
    with sqlite_stack.client() as client:
        cases = {
            ("nobody-" + unique + "@example.com", "x"): (404, "810", "User does not exist."),
            (email, "wrong"): (403, "803", "Invalid credentials."),
            (disabled, disabled_pw): (403, "918", "User is disabled."),
        }
        for (user, pw), (status, code, message) in cases.items():
            response = client.post("/api/v1/login", json={"username": user, "password": pw})
            assert response.status_code == status
            assert response.json()["responseStatus"]["errorCode"] == code
            assert response.json()["responseStatus"]["message"] == message


def test_login_locks_after_five_failures_even_for_the_right_password(
    sqlite_stack: Stack, unique: str
) -> None:
    email, password = sqlite_stack.make_user(unique)
    with sqlite_stack.client() as client:
        codes = [
            client.post("/api/v1/login", json={"username": email, "password": "nope"}).json()[
                "responseStatus"
            ]["errorCode"]
            for _ in range(5)
        ]
        locked = client.post("/api/v1/login", json={"username": email, "password": password})
    assert codes == ["803"] * 5
    assert locked.status_code == 403
    assert locked.json()["responseStatus"] == {
        "errorCode": "55",
        "message": "Maximum failed login attempts reached.",
        "errors": [],
        "meta": {},
    }


def test_no_request_gives_a_500(sqlite_stack: Stack, sender: tuple[str, str]) -> None:
    token, guid = sender
    headers = {"x-sm-session-token": token, "content-type": "application/json"}
    nasty = [
        ("PUT", f"/api/v1/messages/{guid}/save", b'{"to": "not-a-list"}'),
        ("PUT", f"/api/v1/messages/{guid}/save", b'{"expiryDate": "yesterday"}'),
        ("PUT", f"/api/v1/messages/{guid}/save", b'{"messageOptions": [1]}'),
        ("PUT", f"/api/v1/messages/{guid}/save", b'{"bodyFormat": "Pdf"}'),
        ("POST", "/api/v1/messages/", b'{"actionCode": "Reply"}'),
        (
            "POST",
            "/api/v1/messages/",
            b'{"actionCode": "Reply", "parentGuid": "' + b"1" * 32 + b'"}',
        ),
        ("POST", "/api/v1/login", b'{"username": null}'),
        ("POST", "/api/v1/login", b"{}"),
        ("GET", "/api/v1/messages/%00", b""),
        ("PUT", f"/api/v1/messages/{guid}/send", b'{"notificationFormats": "Text"}'),
        ("PUT", f"/api/v1/messages/{guid}/send", b"\x00" * 10),
    ]
    with sqlite_stack.client() as client:
        for method, path, raw in nasty:
            response = client.request(method, path, content=raw, headers=headers)
            assert 400 <= response.status_code < 500, (method, path, raw, response.text)
            assert "responseStatus" in response.json()


def test_http_client_errors_do_not_break_keepalive(sqlite_stack: Stack) -> None:
    with httpx.Client(base_url=sqlite_stack.url("")) as client:
        for _ in range(3):
            assert client.get("/api/v1/public/ping").status_code == 200
            assert client.get("/api/v1/public/ping?callback=a(b)").status_code == 400

"""The vendor's PHP SDK (DeliverySlip/secure-messaging-php), replayed as its source builds
each request (`src/client/HttpRequestHandler.php`, `src/SecureMessenger.php`,
`src/auth/SessionFactory.php`): Guzzle 6, URLs joined as `base . "/" . route` (so every
path has `//`), bodies with null, false, "" and [] left out and PHP's `json_encode`
escaping (`\\/`, `\\uXXXX`), and only `sessionToken`, `emailAddress` and `messageGuid` read."""

from __future__ import annotations

import json
from typing import Any

from tests.clients.replay import Answer, ReplayClient
from tests.factories import World
from tests.support import Stack

BASE = "/api"


def php_json(value: dict[str, Any]) -> bytes:
    """`ClassToJsonConverter::convertToArray` (drops PHP-falsy top-level properties) and
    `json_encode` with its default flags."""
    kept = {k: v for k, v in value.items() if v not in (None, False, "", 0, [])}
    return json.dumps(kept, separators=(",", ":")).replace("/", "\\/").encode()


class PhpMessenger:
    def __init__(self, stack: Stack) -> None:
        self.http = ReplayClient(stack, headers={"User-Agent": "GuzzleHttp/6.5.5 curl/7.88.1"})
        self.email = ""

    def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Answer:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        payload = php_json(body) if body is not None else None
        return self.http.send(method, BASE + "/" + route, payload, headers)

    def login(self, credentials: dict[str, str]) -> None:
        """`SessionFactory::createSession`: no x-sm headers on the login itself."""
        login = self._call("POST", "/login", credentials)
        assert login.status == 200, login.body
        token = login.body["sessionToken"]
        settings = self.http.send(
            "GET",
            BASE + "//user/settings",
            headers={
                "x-sm-session-token": token,
                "x-sm-client-name": "secure-messenger-php",
                "x-sm-client-version": "0.1.0",
            },
        )
        self.email = settings.body["emailAddress"]
        self.http.headers.update(
            {
                "x-sm-client-name": "secure-messenger-php",
                "x-sm-client-version": "0.1.0",
                "x-sm-session-token": token,
            }
        )

    def pre_create(self, action: str = "New", parent: str | None = None) -> str:
        created = self._call("POST", "/v1/messages", {"actionCode": action, "parentGuid": parent})
        return str(created.body["messageGuid"])

    def save(self, guid: str, *, to: list[str], subject: str, body: str, fmt: str) -> Answer:
        return self._call(
            "PUT",
            f"/messages/{guid}/save",
            {
                "messageGuid": guid,
                "to": to,
                "from": [self.email],
                "cc": [],
                "bcc": [],
                "subject": subject,
                "body": body,
                "bodyFormat": fmt,
                "messageOptions": {  # nested: json_encode keeps every key, false included
                    "allowForward": True,
                    "allowReply": False,
                    "allowTracking": True,
                    "fyeoType": "Disabled",
                    "shareTracking": True,
                },
            },
        )

    def send(self, guid: str, *, notify: bool = True) -> Answer:
        return self._call(
            "PUT",
            f"/messages/{guid}/send",
            {
                "messageGuid": guid,
                "password": None,
                "inviteNewUsers": True,
                "sendEmailNotification": notify,
                "craCode": None,
            },
        )


def test_the_send_flow(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader_email, reader_pw = stack.make_user(unique, name="reader", group=world.group)
    php = PhpMessenger(stack)
    php.login({"username": world.sender, "password": world.password})
    guid = php.pre_create()
    saved = php.save(
        guid, to=[reader_email], subject="Grüße from PHP", body="<p>a/b</p>", fmt="Html"
    )
    sent = php.send(guid)
    assert php.email == world.sender.casefold()
    assert saved.status == sent.status == 200, (saved.body, sent.body)

    with stack.client() as client:  # what was stored, as a reader of the message sees it
        message = client.get(
            f"/api/v1/messages/{guid}", headers={"x-sm-session-token": world.token}
        ).json()
    assert (message["status"], message["subject"], message["body"]) == (
        "Sent",
        "Grüße from PHP",
        "<p>a/b</p>",
    )
    assert message["messageOptions"]["allowReply"] is False
    assert [p["email"] for p in message["to"]] == [reader_email.casefold()]

    reader = PhpMessenger(stack)
    reader.login({"username": reader_email, "password": reader_pw})
    reply = reader.pre_create("Forward", guid)
    assert reader.save(reply, to=[world.sender], subject="fwd", body="b", fmt="Text").status == 200
    # `sendNotifications(false)` leaves the key out: the default (true) applies.
    assert reader.send(reply, notify=False).status == 200


def test_token_login_goes_through_login(stack: Stack, unique: str) -> None:
    email, password = stack.make_user(unique)
    with stack.client() as client:
        token = client.get(
            "/api/v1/user/authenticationtoken",
            headers={"x-sm-session-token": stack.login(email, password)},
        ).json()["authenticationToken"]
    php = PhpMessenger(stack)
    php.login({"authenticationToken": token})
    assert php.email == email.casefold()

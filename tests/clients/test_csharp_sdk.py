"""The vendor's C# SDK (DeliverySlip/secure-messaging-csharp), replayed as its source
builds each request (`CSharpMessenger/SecureMessaging/*.cs` over ServiceStack's
JsonServiceClient and the DTOs of `ServiceStackDTOs.cs`): PascalCase properties as the
DTOs declare them, nulls left out, collections sent empty, the shortest route of each
DTO, GET properties in the query string as JSV, and dates as ISO 8601 (the SDK sets
`DateHandler.ISO8601`) or, from a stock ServiceStack client, `/Date(ms)/`.
ServiceStack's deserialiser matches names case-insensitively, so camelCase answers are
read; `BodyFormat` must be exactly `Text` or `Html` (`Enum.Parse`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from tests.clients.replay import Answer, ReplayClient, compact_json
from tests.factories import World
from tests.support import Stack

BASE = "/api"


def _read(body: dict[str, Any], name: str) -> Any:
    """A property as ServiceStack.Text finds it: by name, ignoring case."""
    matches = [v for k, v in body.items() if k.lower() == name.lower()]
    assert len(matches) == 1, (name, body)
    return matches[0]


class CSharpMessenger:
    def __init__(self, stack: Stack) -> None:
        self.http = ReplayClient(
            stack,
            headers={
                "x-sm-client-name": "secure-messenger-csharp",
                "x-sm-client-version": "2.2.0",
                "Accept": "application/json",
                "User-Agent": "ServiceStack .NET Client 5.1.0",
            },
        )

    def _call(self, method: str, route: str, dto: dict[str, Any] | None = None) -> Answer:
        body = None
        headers = {}
        if method in ("POST", "PUT"):
            body = compact_json({k: v for k, v in (dto or {}).items() if v is not None})
            headers["Content-Type"] = "application/json"
        return self.http.send(method, BASE + route, body, headers)

    def login(self, username: str, password: str) -> dict[str, Any]:
        login = self._call(
            "POST", "/login", {"Username": username, "Password": password, "Cookieless": True}
        )
        assert login.status == 200, login.body
        self.http.headers["x-sm-session-token"] = _read(login.body, "SessionToken")
        settings = self._call("GET", "/user/settings")
        assert settings.status == 200, settings.body
        return {k: _read(settings.body, k) for k in ("State", "EmailAddress", "FirstName")}

    def pre_create(self) -> str:
        answer = self._call(
            "POST", "/messages/", {"ActionCode": "New", "ParentGuid": None, "CampaignGuid": None}
        )
        assert answer.status == 200, answer.body
        return str(_read(answer.body, "MessageGuid"))

    def save(self, guid: str, *, to: list[str], expiry: str) -> Answer:
        return self._call(
            "PUT",
            f"/messages/{guid}/save",
            {
                "MessageGuid": guid,
                "To": to,
                "Cc": [],
                "Bcc": [],
                "Subject": "From C#",
                "Body": "Hello from .NET",
                "BodyFormat": "Text",
                "MessageOptions": {
                    "AllowForward": True,
                    "AllowReply": True,
                    "AllowTracking": True,
                    "FYEOType": "Disabled",
                    "ShareTracking": True,
                },
                "ExpiryDate": expiry,
                "ExpiryGroup": None,
            },
        )

    def send(self, guid: str) -> Answer:
        return self._call(
            "PUT",
            f"/messages/{guid}/send",
            {
                "MessageGuid": guid,
                "Password": None,
                "InviteNewUsers": True,
                "CraCode": None,
                "SendEmailNotification": True,
                "NotificationFormats": [],
            },
        )

    def get_message(self, guid: str) -> Answer:
        return self._call("GET", f"/messages/{guid}?retrieveBody=true")

    def search(self, jsv_filter: str) -> Answer:
        """SearchMessages has only its /v1 route; the filter goes as JSV, escaped with
        `Uri.EscapeDataString`."""
        return self._call("GET", f"/v1/messages/search?filter={quote(jsv_filter, safe='')}")

    def logout(self) -> Answer:
        return self._call("POST", "/logout", {})


def test_the_send_flow_and_what_the_sdk_reads(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader_email, reader_pw = stack.make_user(unique, name="reader", group=world.group)
    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    csharp = CSharpMessenger(stack)
    session = csharp.login(world.sender, world.password)
    guid = csharp.pre_create()
    saved = csharp.save(
        guid, to=[reader_email], expiry=expiry.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    )
    sent = csharp.send(guid)
    got = csharp.get_message(guid)

    assert session == {
        "State": "Active",
        "EmailAddress": world.sender.casefold(),
        "FirstName": "Test",
    }
    assert saved.status == sent.status == got.status == 200, (saved.body, sent.body)
    message = got.body
    assert _read(message, "Guid") == guid
    assert _read(message, "BodyFormat") in ("Text", "Html")
    assert _read(message, "Body") == "Hello from .NET"
    assert [_read(p, "Email") for p in _read(message, "To")] == [reader_email.casefold()]
    assert _read(message, "Cc") == [] and _read(message, "Bcc") == []
    assert _read(_read(message, "Sender"), "Email") == world.sender.casefold()
    assert _read(message, "ExpiryDate") == expiry.isoformat().replace("+00:00", "Z")

    reader = CSharpMessenger(stack)
    reader.login(reader_email, reader_pw)
    inbox = reader.search("{Types:[Inbox]}")
    assert inbox.status == 200
    page = inbox.body
    assert (_read(page, "TotalItems"), _read(page, "CurrentPage"), _read(page, "PageSize")) == (
        1,
        1,
        25,
    )
    assert _read(page, "TotalPages") == 1
    assert [_read(m, "Guid") for m in _read(page, "Results")] == [guid]
    assert reader.search("{Types:[Inbox],SearchCriteria:nothing-like-this}").body["totalItems"] == 0
    assert csharp.logout().status == 200
    assert csharp.get_message(guid).status == 401


def test_a_stock_servicestack_client_sends_wcf_dates(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    csharp = CSharpMessenger(stack)
    csharp.login(world.sender, world.password)
    guid = csharp.pre_create()
    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    millis = int(expiry.timestamp() * 1000)
    assert csharp.save(guid, to=[world.user("r")], expiry=f"/Date({millis}-0000)/").status == 200
    answered = _read(csharp.get_message(guid).body, "ExpiryDate")
    assert answered == expiry.isoformat().replace("+00:00", "Z")

"""The vendor's C# SDK (DeliverySlip/secure-messaging-csharp), replayed as its source
builds each request (`CSharpMessenger/SecureMessaging/*.cs` over ServiceStack's
JsonServiceClient and the DTOs of `ServiceStackDTOs.cs`): PascalCase properties as the
DTOs declare them, nulls left out, collections sent empty, the shortest route of each
DTO, GET properties in the query string as JSV, and dates as ISO 8601 (the SDK sets
`DateHandler.ISO8601`) or, from a stock ServiceStack client, `/Date(ms)/`.
ServiceStack's deserialiser matches names case-insensitively, so camelCase answers are
read; `BodyFormat` must be exactly `Text` or `Html` (`Enum.Parse`).

Attachments, as `SecureMessenger.UploadAttachmentsForMessage` / `DownloadAttachment` build them
(`CSharpMessenger/SecureMessaging/SecureMessenger.cs`; `MsgApiClient.UploadAttachments` is the
same with an empty file name; the later `Attachment/AttachmentManager.cs` never sets its
pre-created flag, so it uploads nothing) over ServiceStack.Client 5.1
(`ServiceClientBase.PostFileWithRequest`):

- pre-create: `POST /api/attachments/precreate`, `{"MessageGuid":"<32 hex>",
  "AttachmentPlaceholders":[{"FileName","TotalBytesLength"}]}`; reads `AttachmentPlaceholders[]`
  `.AttachmentGuid`, `.FileName` (matched exactly to the local file's name) and `.Chunks[]`.
- each chunk: the client builds the URL from the DTO, `POST /api/attachments/<32 hex>/chunk/<n>`,
  from a buffer of `BytesSize` bytes read at `ByteStartIndex`. `Content-Type: multipart/form-data;
  boundary=<28 dashes><32 hex>`; the DTO's properties first as text parts
  (`Content-Disposition: form-data;name="AttachmentGuid"` and `"ChunkNumber"`, each with
  `Content-Type: text/plain;charset=utf-8`), then the bytes: `Content-Disposition:
  form-data;name="upload";filename="<FileName>"` and no Content-Type; the body ends with
  `--<boundary>--` and no CRLF. `Accept: application/json`; a non-2xx throws.
- remove: the SDK has no call; a stock JsonServiceClient `Delete(new RemoveAttachment{…})` sends
  `DELETE /api/messages/<32 hex>/attachments/<32 hex>` with no body.
- GetMessage: only `Attachments.Count > 0` (`AttachmentSummary`: `Guid` a Guid, `FileSize` a
  long, `ChunkCount` an int).
- download: `GET /api/attachments/<32 hex>` (`Accept: application/json`), and the file name is
  the Content-Disposition header with `attachment; filename=`, `"` and `;` removed.
- GetServiceSettings: never called."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from tests.clients.replay import (
    Answer,
    FormPart,
    LocalFile,
    ReplayClient,
    attachment_files,
    compact_json,
    form_disposition,
    multipart_body,
)
from tests.factories import World
from tests.support import Stack

BASE = "/api"


def _read(body: dict[str, Any], name: str) -> Any:
    """A property as ServiceStack.Text finds it: by name, ignoring case."""
    matches = [v for k, v in body.items() if k.lower() == name.lower()]
    assert len(matches) == 1, (name, body)
    return matches[0]


def _n(guid: str) -> str:
    """A Guid as ServiceStack writes it, in routes and bodies: 32 hex digits."""
    return uuid.UUID(guid).hex


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

    # --- attachments --------------------------------------------------------------------

    def pre_create_attachments(self, guid: str, files: list[LocalFile]) -> list[dict[str, Any]]:
        answer = self._call(
            "POST",
            "/attachments/precreate",
            {
                "MessageGuid": _n(guid),
                "AttachmentPlaceholders": [
                    {"FileName": f.name, "TotalBytesLength": len(f.content)} for f in files
                ],
            },
        )
        assert answer.status == 200, answer.body
        return list(_read(answer.body, "AttachmentPlaceholders"))

    def upload_all(self, placeholders: list[dict[str, Any]], files: list[LocalFile]) -> None:
        """Each placeholder's file (`First(a => a.Name.Equals(FileName))`), chunk by chunk."""
        for placeholder in placeholders:
            name = _read(placeholder, "FileName")
            local = next(f for f in files if f.name == name)
            for chunk in _read(placeholder, "Chunks"):
                start, size = _read(chunk, "ByteStartIndex"), _read(chunk, "BytesSize")
                answer = self._post_file_with_request(
                    _n(_read(placeholder, "AttachmentGuid")),
                    _read(chunk, "ChunkNumber"),
                    name,
                    local.content[start : start + size],
                )
                assert answer.status == 200, (chunk, answer.body)

    def _post_file_with_request(
        self, attachment_guid: str, chunk_number: int, file_name: str, data: bytes
    ) -> Answer:
        """`PostFileWithRequest(stream, fileName, new UploadAttachmentChunk{…})`."""
        boundary = "-" * 28 + uuid.uuid4().hex
        fields = (("AttachmentGuid", attachment_guid), ("ChunkNumber", str(chunk_number)))
        parts = [
            FormPart(
                (
                    ("Content-Disposition", form_disposition(key, spaced=False)),
                    ("Content-Type", "text/plain;charset=utf-8"),
                ),
                value.encode(),
            )
            for key, value in fields
        ]
        parts.append(
            FormPart(
                (("Content-Disposition", form_disposition("upload", file_name, spaced=False)),),
                data,
            )
        )
        return self.http.send(
            "POST",
            f"{BASE}/attachments/{attachment_guid}/chunk/{chunk_number}",
            multipart_body(parts, boundary=boundary, closing_crlf=False),
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )

    def remove_attachment(self, message_guid: str, attachment_guid: str) -> Answer:
        return self._call(
            "DELETE", f"/messages/{_n(message_guid)}/attachments/{_n(attachment_guid)}"
        )

    def download_attachment(self, attachment_guid: str) -> tuple[str, bytes]:
        response = self.http.exchange("GET", f"{BASE}/attachments/{_n(attachment_guid)}")
        assert 200 <= response.status_code < 300, response.text
        disposition = response.headers["content-disposition"]
        name = disposition.replace("attachment; filename=", "").replace('"', "").replace(";", "")
        return name, response.content


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


def test_the_attachment_flow(stack: Stack, unique: str) -> None:
    """Pre-create two files, upload every chunk, remove one, send; the recipient sees the
    other and downloads the very bytes under the name Content-Disposition gives."""
    world = World(stack, unique).setup()
    reader_email, reader_pw = stack.make_user(unique, name="reader", group=world.group)
    small, large = attachment_files()
    csharp = CSharpMessenger(stack)
    csharp.login(world.sender, world.password)
    guid = csharp.pre_create()
    placeholders = csharp.pre_create_attachments(guid, [small, large])
    csharp.upload_all(placeholders, [small, large])
    created = {_read(p, "FileName"): _n(_read(p, "AttachmentGuid")) for p in placeholders}
    removed = csharp.remove_attachment(guid, created[small.name])
    expiry = datetime.now(UTC) + timedelta(days=2)
    saved = csharp.save(guid, to=[reader_email], expiry=expiry.strftime("%Y-%m-%dT%H:%M:%SZ"))
    sent = csharp.send(guid)
    large_placeholder = next(p for p in placeholders if _read(p, "FileName") == large.name)
    assert len(_read(large_placeholder, "Chunks")) > 1
    assert removed.status == 200, removed.body
    assert saved.status == sent.status == 200, (saved.body, sent.body)

    reader = CSharpMessenger(stack)
    reader.login(reader_email, reader_pw)
    got = reader.get_message(guid)
    assert got.status == 200, got.body
    attachments = _read(got.body, "Attachments")
    assert [_n(_read(a, "Guid")) for a in attachments] == [created[large.name]]
    assert isinstance(_read(attachments[0], "FileSize"), int)
    assert isinstance(_read(attachments[0], "ChunkCount"), int)
    name, content = reader.download_attachment(_read(attachments[0], "Guid"))
    assert name == large.name
    assert LocalFile(name, content).sha256 == large.sha256

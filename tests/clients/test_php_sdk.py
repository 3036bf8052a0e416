"""The vendor's PHP SDK (DeliverySlip/secure-messaging-php), replayed as its source builds
each request (`src/client/HttpRequestHandler.php`, `src/SecureMessenger.php`,
`src/auth/SessionFactory.php`): Guzzle 6, URLs joined as `base . "/" . route` (so every
path has `//`), bodies with null, false, "" and [] left out and PHP's `json_encode`
escaping (`\\/`, `\\uXXXX`), and only `sessionToken`, `emailAddress` and `messageGuid` read.

Attachments, as `src/attachment/AttachmentManager.php` and `HttpRequestHandler::multipart`
build them (Guzzle 6 with guzzlehttp/psr7 1.x `MultipartStream`, `exceptions => false`, so no
answer is ever checked):

- pre-create: `POST /api//attachments/precreate`, `{"messageGuid","attachmentPlaceholders":
  [{"fileName","totalBytesLength"}]}`; reads `attachmentPlaceholders[].attachmentGuid`,
  `.fileName` (matched with `==`) and `.chunks[].byteStartIndex`, `.byteEndIndex`, `.uploadUri`.
- each chunk: `fseek(byteStartIndex)`, `fread(byteEndIndex - byteStartIndex)`, then
  `POST <uploadUri>` exactly as given (Guzzle has no base URI: it must be absolute).
  `Content-Type: multipart/form-data; boundary=<sha1(uniqid()), 40 hex>`, one part:
  `Content-Disposition: form-data; name="upload"; filename="<file>"`, `Content-Length: <n>`,
  and the Content-Type Guzzle guesses from the file's extension (`application/pdf`,
  `application/octet-stream` for `.bin`, none for an unknown one); `--<boundary>--` CRLF.
  A body of 1 MiB or more also gets `Expect: 100-Continue` (Guzzle's PrepareBodyMiddleware).
- delete: `deleteAttachmentFileMatchingGuid` sends `DELETE /api//attachments/<guid>`, no body
  (the vendor's DeleteAttachment route; the SDK's FIXME notes the vendor answers 404 there).
- no GetMessage, no download, no GetServiceSettings: the recipient's side is checked through
  plain HTTP."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from tests.clients.replay import (
    Answer,
    FormPart,
    LocalFile,
    ReplayClient,
    attachment_files,
    form_disposition,
    multipart_body,
)
from tests.factories import World
from tests.support import Stack

BASE = "/api"
# guzzlehttp/psr7's `mimetype_from_filename`, for the extensions these tests use.
GUZZLE_MIME_TYPES = {"bin": "application/octet-stream", "pdf": "application/pdf"}
GUZZLE_EXPECT_BYTES = 1024 * 1024


def php_json(value: dict[str, Any]) -> bytes:
    """`ClassToJsonConverter::convertToArray` (drops PHP-falsy top-level properties) and
    `json_encode` with its default flags."""
    kept = {k: v for k, v in value.items() if v not in (None, False, "", 0, [])}
    return json.dumps(kept, separators=(",", ":")).replace("/", "\\/").encode()


class PhpMessenger:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
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

    # --- attachments (AttachmentManager) ------------------------------------------------

    def pre_create_attachments(self, guid: str, files: list[LocalFile]) -> list[dict[str, Any]]:
        answer = self._call(
            "POST",
            "/attachments/precreate",
            {
                "messageGuid": guid,
                "attachmentPlaceholders": [
                    {"fileName": f.name, "totalBytesLength": len(f.content)} for f in files
                ],
            },
        )
        assert answer.status == 200, answer.body
        return list(answer.body["attachmentPlaceholders"])

    def upload_all(self, placeholders: list[dict[str, Any]], files: list[LocalFile]) -> None:
        for placeholder in placeholders:
            for local in (f for f in files if f.name == placeholder["fileName"]):
                for chunk in placeholder["chunks"]:
                    data = local.content[chunk["byteStartIndex"] : chunk["byteEndIndex"]]
                    answer = self._multipart(chunk["uploadUri"], local.name, data)
                    assert answer.status == 200, (chunk, answer.body)

    def _multipart(self, upload_uri: str, file_name: str, data: bytes) -> Answer:
        """`HttpRequestHandler::multipart("POST", $uploadUri, $fileName, $contents)`."""
        assert upload_uri.startswith(self.stack.url("/")), upload_uri  # used verbatim
        boundary = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
        headers = [
            ("Content-Disposition", form_disposition("upload", file_name)),
            ("Content-Length", str(len(data))),
        ]
        guessed = GUZZLE_MIME_TYPES.get(file_name.rpartition(".")[2].lower())
        if guessed is not None:
            headers.append(("Content-Type", guessed))
        body = multipart_body(
            [FormPart(tuple(headers), data)], boundary=boundary, closing_crlf=True
        )
        request_headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if len(body) >= GUZZLE_EXPECT_BYTES:
            request_headers["Expect"] = "100-Continue"
        return self.http.send("POST", upload_uri, body, request_headers)

    def delete_attachment(self, attachment_guid: str) -> Answer:
        return self._call("DELETE", f"/attachments/{attachment_guid}")


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


def test_the_attachment_flow(stack: Stack, unique: str) -> None:
    """Pre-create two files, upload every chunk, delete one, send; the recipient (through
    plain HTTP: the SDK cannot read) sees the other and downloads the very bytes."""
    world = World(stack, unique).setup()
    reader_email, reader_pw = stack.make_user(unique, name="reader", group=world.group)
    small, large = attachment_files()
    php = PhpMessenger(stack)
    php.login({"username": world.sender, "password": world.password})
    guid = php.pre_create()
    placeholders = php.pre_create_attachments(guid, [small, large])
    php.upload_all(placeholders, [small, large])
    created = {p["fileName"]: p["attachmentGuid"] for p in placeholders}
    deleted = php.delete_attachment(created[small.name])
    saved = php.save(guid, to=[reader_email], subject="Files from PHP", body="b", fmt="Text")
    sent = php.send(guid)
    assert len(next(p for p in placeholders if p["fileName"] == large.name)["chunks"]) > 1
    assert deleted.status == 200, deleted.body
    assert saved.status == sent.status == 200, (saved.body, sent.body)

    headers = {"x-sm-session-token": stack.login(reader_email, reader_pw)}
    with stack.client() as client:
        message = client.get(f"/api/v1/messages/{guid}", headers=headers).json()
        assert [a["guid"] for a in message["attachments"]] == [created[large.name]]
        download = client.get(f"/api/v1/attachments/{created[large.name]}", headers=headers)
    assert download.status_code == 200, download.text
    assert LocalFile(large.name, download.content).sha256 == large.sha256

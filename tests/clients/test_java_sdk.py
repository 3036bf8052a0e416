"""The vendor's Java SDK (DeliverySlip/java-sdk 3.x), replayed as its source builds each
request (`ClientRequestHandler.makeRequest`, `sm/request/*.java`, `SecureMessenger.java`):
Spring's RestTemplate with Jackson, base URL `…/api/v1`, every property written (nulls
included) plus `requestRoute`, `requestParams` and `requestMethod`; `Accept` and
`Content-Type: application/json` on every request, GETs included. Each answer is read as
the SDK's DTOs read it: exact camelCase names, a JSON content type, 4xx/5xx as errors.

Attachments, as 3.4 builds them (`com/securemessaging/AttachmentManager.java`,
`sm/attachments/*.java`, `sm/request/PostPreCreateAttachmentsRequest.java`,
`sm/request/DeleteAttachmentRequest.java`; 3.3's `sm/attachments/AttachmentManager.java`
uploads and downloads the same way but cannot delete):

- pre-create: `POST /api/v1/attachments/precreate`, `{"messageGuid", "attachmentPlaceholders":
  [{"fileName", "totalBytesLength"}]}` plus the three request getters; reads
  `attachmentPlaceholders[].attachmentGuid`, `.fileName` (matched to the local file's name,
  ignoring case) and `.chunks[].uploadUri`, `.byteStartIndex`, `.byteEndIndex`.
- each chunk: `RestTemplate.postForEntity(uploadUri, …)`, the URI exactly as the server gave it
  (it must be absolute). The file is read *sequentially*, `byteEndIndex - byteStartIndex` bytes
  per chunk (so the end is exclusive). Spring 4.3's `FormHttpMessageConverter` writes
  `Content-Type: multipart/form-data;charset=UTF-8;boundary=<30-40 of [-_0-9a-zA-Z]>` and one
  part: `Content-Disposition: form-data; name="upload"; filename="<file>"`, `Content-Type:
  application/octet-stream`, `Content-Length: <n>`, then `--<boundary>--` CRLF. The interceptor
  skips its JSON headers for this call, so `Accept` is Spring's for a JSON response type
  (`application/json, application/*+json`). The answer is read into `AttachmentChunk` (JSON);
  a 4xx is printed and swallowed, so the replay checks the status itself.
- delete: `deleteAttachmentFile(guid)` sends `DELETE /api/v1/attachments/{guid}` (the vendor's
  DeleteAttachment, not RemoveAttachment) with the JSON body `{"attachmentGuid", "requestRoute",
  "requestParams", "requestMethod"}`; the answer is read as a String (any 2xx).
- download: `getAttachmentsInfo()` is GetMessage's `attachments` (`AttachmentSummary`: `guid`,
  `fileName`, `type`, `fileSize` and `chunkCount` as Java ints, `status`,
  `originalFileExtension`); `downloadAttachment` GETs `/api/v1/attachments/{guid}` with
  `Accept: application/json` and `Content-Type: application/json` (the interceptor overwrites the
  entity's octet-stream `Accept`), needs exactly 200, and names the file `fileName` of the
  summary: Content-Disposition is not read.
- GetServiceSettings: never called."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

import pytest

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

BASE = "/api/v1"
FYEO_TYPES = {"Disabled", "AccountPassword", "UniquePassword"}
SPRING_BOUNDARY_CHARS = "-_1234567890abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def spring_boundary() -> str:
    """`MimeTypeUtils.generateMultipartBoundary`: 30 to 40 random characters."""
    return "".join(secrets.choice(SPRING_BOUNDARY_CHARS) for _ in range(30 + secrets.randbelow(11)))


class JavaMessenger:
    """`SecureMessenger` of the Java SDK, one request at a time."""

    def __init__(self, stack: Stack, version: str = "3.3.1") -> None:
        self.stack = stack
        self.http = ReplayClient(
            stack,
            headers={
                "x-sm-client-name": "secure-messenger-java",
                "x-sm-client-version": version,
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": "Java/17.0.15",
            },
        )

    def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Answer:
        """`makeRequest`: a body for POST/PUT/DELETE (with the three getters of
        `SMRequestInterface`), none for GET; a JSON answer on success."""
        payload = None
        if method != "GET":
            payload = compact_json(
                {
                    **(body or {}),
                    "requestRoute": route.split("?")[0] if method != "DELETE" else route,
                    "requestParams": {},
                    "requestMethod": method,
                }
            )
        answer = self.http.send(method, BASE + route, payload)
        if answer.ok and answer.body is not None:
            assert answer.content_type.startswith("application/json"), answer.content_type
        return answer

    def login(self, username: str, password: str) -> dict[str, str]:
        """`SessionFactory`: POST /login, then GET /user/settings with the new session."""
        login = self._call("POST", "/login", {"username": username, "password": password})
        assert login.status == 200, login.body
        self.http.headers["x-sm-session-token"] = login.body["sessionToken"]
        return self.settings()

    def settings(self) -> dict[str, str]:
        settings = self._call("GET", "/user/settings")
        assert settings.status == 200, settings.body
        session = {k: settings.body[k] for k in ("firstName", "lastName", "emailAddress", "state")}
        assert all(isinstance(v, str) for v in session.values()), session
        return session

    def ping(self) -> Answer:
        """`GetPingRequest`: the base cut at `/api`, then `/api/public/ping`."""
        return self.http.send("GET", "/api/public/ping")

    def pre_create(self, action: str = "New", parent: str | None = None) -> str:
        answer = self._call(
            "POST",
            "/messages",
            {
                "actionCode": action,
                "parentGuid": parent,
                "password": None,
                "authAuditToken": None,
                "campainGuid": None,  # sic: the SDK's spelling
                "externalMessageId": None,
            },
        )
        assert answer.status == 200, answer.body
        return str(answer.body["messageGuid"])

    def save(self, guid: str, *, to: list[str], subject: str, body: str) -> Answer:
        return self._call(
            "PUT",
            f"/messages/{guid}/save",
            {
                "messageGuid": guid,
                "to": to,
                "cc": None,
                "bcc": None,
                "subject": subject,
                "body": body,
                "bodyFormat": "Text",
                "messageOptions": {
                    "allowForward": True,
                    "allowReply": True,
                    "allowTracking": True,
                    "fyeoType": "Disabled",
                    "shareTracking": True,
                },
            },
        )

    def send(self, guid: str) -> Answer:
        return self._call(
            "PUT",
            f"/messages/{guid}/send",
            {
                "messageGuid": guid,
                "password": None,
                "inviteNewUsers": True,
                "sendEmailNotification": True,
                "craCode": None,
                "notificationFormats": None,
            },
        )

    def get_message(self, guid: str) -> Answer:
        return self._call("GET", f"/messages/{guid}")

    def search(self, box: str, criteria: str, page: int = 1, page_size: int = 25) -> Answer:
        """`GetSearchMessagesRequest`: the filter built as text, the URI encoded by Spring's
        template handler (`'`, `:` and `,` stay as they are)."""
        jsv = '{ "types":[' + box + '], "searchCriteria": \'' + criteria + "'}"
        spring_safe = ":,'+"
        query = f"filter={quote(jsv, safe=spring_safe)}&page={page}&pageSize={page_size}"
        return self._call("GET", f"/messages/search?{query}")

    def new_authentication_token(self, days: int) -> str:
        answer = self._call("GET", f"/user/authenticationtoken?authenticationTokenMaxDays={days}")
        assert answer.status == 200, answer.body
        return str(answer.body["authenticationToken"])

    def authenticate(self, token: str) -> Answer:
        return self._call(
            "POST", "/authenticate", {"authenticationToken": token, "cookieless": False}
        )

    def expire_token(self, token: str) -> Answer:
        route = f"/user/authenticationtoken?authenticationToken={quote(token, safe='+/')}"
        return self._call("DELETE", route, {"authenticationToken": token})

    def recall(self, guid: str) -> Answer:
        return self._call(
            "POST",
            f"/messages/{guid}/recall",
            {
                "messageGuid": guid,
                "recallReason": "My Recall Reason",
                "singleRecall": False,
                "unshareAttachments": True,
            },
        )

    # --- attachments (3.4's AttachmentManager) ----------------------------------------------

    def pre_create_attachments(self, guid: str, files: list[LocalFile]) -> list[dict[str, Any]]:
        """`preCreateAllAttachments`: one placeholder per added file."""
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
        """`uploadAllAttachments`: each placeholder's file (by name, ignoring case), its chunks
        read one after the other from the file's start."""
        for placeholder in placeholders:
            local = next(f for f in files if f.name.lower() == placeholder["fileName"].lower())
            position = 0
            for chunk in placeholder["chunks"]:
                length = chunk["byteEndIndex"] - chunk["byteStartIndex"]
                data = local.content[position : position + length]
                position += length
                answer = self._upload_chunk(chunk["uploadUri"], local.name, data)
                assert answer.status == 200, (chunk, answer.body)
                assert answer.content_type.startswith("application/json"), answer.content_type

    def _upload_chunk(self, upload_uri: str, file_name: str, data: bytes) -> Answer:
        assert upload_uri.startswith(self.stack.url("/")), upload_uri  # used verbatim
        boundary = spring_boundary()
        part = FormPart(
            (
                ("Content-Disposition", form_disposition("upload", file_name)),
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(len(data))),
            ),
            data,
        )
        return self.http.send(
            "POST",
            upload_uri,
            multipart_body([part], boundary=boundary, closing_crlf=True),
            {
                "Content-Type": f"multipart/form-data;charset=UTF-8;boundary={boundary}",
                "Accept": "application/json, application/*+json",
            },
        )

    def delete_attachment(self, attachment_guid: str) -> Answer:
        """`deleteAttachmentFile(attachmentGuid)`."""
        return self._call(
            "DELETE", f"/attachments/{attachment_guid}", {"attachmentGuid": attachment_guid}
        )

    def attachments_info(self, guid: str) -> list[dict[str, Any]]:
        """`getAttachmentsInfo`: GetMessage's `attachments`, into `AttachmentSummary`."""
        answer = self.get_message(guid)
        assert answer.status == 200, answer.body
        summaries = answer.body["attachments"]
        for summary in summaries:
            assert isinstance(summary["guid"], str) and isinstance(summary["fileName"], str)
            assert isinstance(summary["fileSize"], int) and isinstance(summary["chunkCount"], int)
        return list(summaries)

    def download_attachment(self, summary: dict[str, Any]) -> tuple[str, bytes]:
        """`downloadAttachment`: the bytes, saved under the summary's `fileName`."""
        response = self.http.exchange("GET", f"{BASE}/attachments/{summary['guid']}")
        assert response.status_code == 200, response.text
        return str(summary["fileName"]), response.content


def _assert_summary_as_the_sdk_reads_it(summary: dict[str, Any], guid: str) -> None:
    """`SMConverter.convertMessageSummaryToMessage`: NPEs on null lists or objects."""
    assert summary["guid"] == guid
    for kind in ("to", "cc", "bcc"):
        assert isinstance(summary[kind], list)
        assert all(isinstance(person["email"], str) for person in summary[kind])
    assert isinstance(summary["sender"]["email"], str)
    options = summary["messageOptions"]
    assert options["fyeoType"] in FYEO_TYPES
    assert all(
        isinstance(options[k], bool)
        for k in ("allowForward", "allowReply", "allowTracking", "shareTracking")
    )
    assert summary["bodyFormat"] in ("Text", "Html")


@pytest.fixture
def world(stack: Stack, unique: str) -> World:
    return World(stack, unique).setup()


def test_login_settings_ping(world: World) -> None:
    java = JavaMessenger(world.stack)
    session = java.login(world.sender, world.password)
    ping = java.ping()
    assert session["emailAddress"] == world.sender.casefold()
    assert session["state"] == "Active"
    assert ping.status == 200
    assert isinstance(ping.body["build"], str)
    assert isinstance(ping.body["version"], int)
    assert isinstance(ping.body["minSupportedVersion"], int)


def test_the_send_flow_and_what_the_sdk_reads(world: World) -> None:
    reader_email, reader_pw = world.stack.make_user(world.tag, name="reader", group=world.group)
    java = JavaMessenger(world.stack)
    java.login(world.sender, world.password)
    guid = java.pre_create()
    saved = java.save(guid, to=[reader_email], subject="From Java", body="Hello from the SDK")
    sent = java.send(guid)
    got = java.get_message(guid)
    assert saved.status == 200 and sent.status == 200, (saved.body, sent.body)
    assert sent.body["notificationSent"] is True
    assert isinstance(sent.body["notificationBodyText"], str)
    assert got.status == 200
    _assert_summary_as_the_sdk_reads_it(got.body, guid)
    assert [p["email"] for p in got.body["to"]] == [reader_email.casefold()]
    assert (got.body["subject"], got.body["body"]) == ("From Java", "Hello from the SDK")

    reader = JavaMessenger(world.stack)
    reader.login(reader_email, reader_pw)
    found = reader.search("Inbox", "java")
    assert found.status == 200
    page = found.body
    assert (page["currentPage"], page["pageSize"], page["totalItems"]) == (1, 25, 1)
    assert page["totalPages"] == 1 and len(page["results"]) == page["totalItems"]
    _assert_summary_as_the_sdk_reads_it(page["results"][0], guid)
    assert reader.search("Inbox", "").body["totalItems"] == 1
    assert reader.search("Sent", "").body["totalItems"] == 0

    # A message that is not the caller's: an error status with the ServiceStack body.
    stranger = JavaMessenger(world.stack)
    stranger.login(*world.stack.make_user(world.tag, name="stranger"))
    foreign = stranger.get_message(guid)
    assert foreign.status == 404
    assert foreign.body["responseStatus"]["errorCode"] == "929"
    assert java.recall(guid).status == 200


def test_paging_as_the_sdk_pages(world: World) -> None:
    """`SearchMessagesResults` asks for `++currentPage` with the first answer's
    `pageSize` until it has seen `totalItems`."""
    reader_email, reader_pw = world.stack.make_user(world.tag, name="reader", group=world.group)
    sent = [world.sent_message([reader_email]) for _ in range(5)]
    reader = JavaMessenger(world.stack)
    reader.login(reader_email, reader_pw)
    first = reader.search("Inbox", "", page=1, page_size=2).body
    seen = list(first["results"])
    page, page_size = first["currentPage"], first["pageSize"]
    while len(seen) < first["totalItems"]:
        page += 1
        seen += reader.search("Inbox", "", page=page, page_size=page_size).body["results"]
    assert [m["guid"] for m in seen] == list(reversed(sent))


def test_token_login(world: World) -> None:
    java = JavaMessenger(world.stack)
    java.login(world.sender, world.password)
    token = java.new_authentication_token(2)
    # `login()` with token credentials: the old session's header still goes along.
    authenticated = java.authenticate(token)
    assert authenticated.status == 200
    java.http.headers["x-sm-session-token"] = authenticated.body["sessionToken"]
    assert java.settings()["emailAddress"] == world.sender.casefold()
    assert java.expire_token(token).status == 200
    assert java.authenticate(token).status == 403


def test_the_attachment_flow_of_3_4(world: World) -> None:
    """Pre-create two files, upload every chunk, delete one, send; the recipient lists the
    other and downloads the very bytes."""
    reader_email, reader_pw = world.stack.make_user(world.tag, name="reader", group=world.group)
    small, large = attachment_files()
    java = JavaMessenger(world.stack, version="3.4.0")
    java.login(world.sender, world.password)
    guid = java.pre_create()
    placeholders = java.pre_create_attachments(guid, [small, large])
    java.upload_all(placeholders, [small, large])
    created = {p["fileName"]: p["attachmentGuid"] for p in placeholders}
    deleted = java.delete_attachment(created[small.name])
    saved = java.save(guid, to=[reader_email], subject="Files from Java", body="Two, then one")
    sent = java.send(guid)
    assert len(next(p for p in placeholders if p["fileName"] == large.name)["chunks"]) > 1
    assert deleted.status == 200, deleted.body
    assert saved.status == sent.status == 200, (saved.body, sent.body)

    reader = JavaMessenger(world.stack, version="3.4.0")
    reader.login(reader_email, reader_pw)
    summaries = reader.attachments_info(guid)
    assert [(s["guid"], s["fileName"]) for s in summaries] == [(created[large.name], large.name)]
    name, content = reader.download_attachment(summaries[0])
    assert name == large.name
    assert LocalFile(name, content).sha256 == large.sha256

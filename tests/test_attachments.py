"""Sending a file (SPEC 9), through HTTP on both stacks: pre-create, upload in chunks,
remove, send, read, download; the limits, who may download, and what a chunk may be."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text, update

from tests.factories import BOUNDARY, Files, World, multipart
from tests.support import Stack, assert_error
from worker.domain.attachments import CHUNK_BYTES
from worker.models import Message


def _reader(world: World) -> tuple[str, Files]:
    email, password = world.stack.make_user(world.tag, name="reader", group=world.group)
    return email, Files(world.stack, world.stack.login(email, password))


def _sent_with_file(world: World, to: str, data: bytes, **options: Any) -> tuple[str, str]:
    """A message to `to` with one file of `data`, sent; its GUID and the file's."""
    guid = world.draft(to=[to], **({"messageOptions": options} if options else {}))
    files = Files(world.stack, world.token)
    (placeholder,) = files.placeholders(guid, {"notes.txt": len(data)})
    files.upload_all(placeholder, data)
    answer = world.send(guid, password="fyeo-password") if options else world.send(guid)
    assert answer.status_code == 200, answer.text
    return guid, placeholder["attachmentGuid"]


def test_a_file_in_chunks_is_sent_read_and_downloaded_byte_for_byte(
    stack: Stack, unique: str
) -> None:
    world = World(stack, unique).setup()
    reader, reader_files = _reader(world)
    files = Files(stack, world.token)
    report = secrets.token_bytes(2 * CHUNK_BYTES + 12_345)  # three chunks, the last short
    dropped = b"not sent"
    guid = world.draft(to=[reader])

    report_place, dropped_place = files.placeholders(guid, {"report.pdf": len(report), "x.txt": 8})

    chunks = report_place["chunks"]
    assert [c["chunkNumber"] for c in chunks] == [1, 2, 3]
    assert [(c["byteStartIndex"], c["byteEndIndex"]) for c in chunks] == [
        (0, CHUNK_BYTES),
        (CHUNK_BYTES, 2 * CHUNK_BYTES),
        (2 * CHUNK_BYTES, len(report)),
    ]
    assert all(c["bytesSize"] == c["byteEndIndex"] - c["byteStartIndex"] for c in chunks)
    assert chunks[1]["uploadUri"] == stack.url(
        f"/api/v1/attachments/{report_place['attachmentGuid']}/chunk/2"
    )
    files.upload_all(report_place, report)
    files.upload_all(dropped_place, dropped)
    assert files.remove(guid, dropped_place["attachmentGuid"]).json() == {}

    sent = world.send(guid)
    assert sent.status_code == 200, sent.text
    assert "report.pdf (4.2 MB)" in sent.json()["notificationBodyText"]
    assert "report.pdf (4.2 MB)" in sent.json()["notificationBodyHtml"]

    (summary,) = reader_files.message(guid).json()["attachments"]
    assert summary == {
        "guid": report_place["attachmentGuid"],
        "fileName": "report.pdf",
        "fileSize": len(report),
        "status": "Complete",
        "chunkCount": 3,
        "originalFileExtension": "pdf",
        "type": "application/pdf",
    }
    with stack.client() as client:
        listed = client.get(
            "/api/v1/messages/search",
            params={"filter": '{"types":["Inbox"]}'},
            headers={"x-sm-session-token": reader_files.token},
        ).json()["results"]
    assert [m["attachments"] for m in listed if m["guid"] == guid] == [[summary]]
    downloaded = reader_files.download(summary["guid"])
    assert downloaded.status_code == 200
    assert downloaded.headers["content-disposition"] == 'attachment; filename="report.pdf"'
    assert hashlib.sha256(downloaded.content).digest() == hashlib.sha256(report).digest()
    assert files.download(summary["guid"]).content == report  # the sender too
    # Sent, the files are frozen.
    assert_error(files.remove(guid, summary["guid"]), 403, "906", "Message already sent.")
    assert_error(
        files.upload(summary["guid"], 1, report[:CHUNK_BYTES]), 403, "906", "Message already sent."
    )


def test_a_remove_with_a_json_body_answers_200_and_the_file_is_gone(
    stack: Stack, unique: str
) -> None:
    """The Java SDK's RemoveAttachment: the DELETE carries a JSON body naming both GUIDs."""
    world = World(stack, unique).setup()
    files = world.files()
    guid = world.draft()
    kept, gone = files.placeholders(guid, {"kept.txt": 4, "gone.txt": 4})
    files.upload_all(gone, b"gone")
    attachment = gone["attachmentGuid"]

    answer = files.remove(
        guid, attachment, body={"messageGuid": guid, "attachmentGuid": attachment}
    )
    assert answer.status_code == 200, answer.text
    assert answer.request.headers["content-type"] == "application/json"
    assert answer.json() == {}
    listed = files.message(guid).json()["attachments"]
    assert [(a["guid"], a["fileName"]) for a in listed] == [(kept["attachmentGuid"], "kept.txt")]
    assert_error(files.download(attachment), 404, "929", "Message not found")


def test_a_chunk_uploaded_again_with_its_bytes_is_fine_with_others_refused(
    stack: Stack, unique: str
) -> None:
    world = World(stack, unique).setup()
    files = Files(stack, world.token)
    (place,) = files.placeholders(world.draft(), {"a.bin": 10})
    attachment = place["attachmentGuid"]

    assert files.upload(attachment, 1, b"0123456789").status_code == 200
    assert files.upload(attachment, 1, b"0123456789").status_code == 200
    other = assert_error(
        files.upload(attachment, 1, b"9876543210"),
        400,
        "ValidationException",
        "Chunk 1 of 'a.bin' is already uploaded with other bytes.",
    )
    assert other["errors"][0]["fieldName"] == "Upload"
    assert_error(
        files.upload(attachment, 1, b"short"),
        400,
        "ValidationException",
        "Chunk 1 of 'a.bin' is 10 bytes; 5 were uploaded.",
    )
    for number in (0, 10**9, 2):
        answer = files.upload(attachment, number, b"0123456789")
        assert answer.status_code == 400, answer.text
        assert answer.json()["responseStatus"]["errors"][0]["fieldName"] == "ChunkNumber"


def test_an_incomplete_file_stops_the_send_and_nothing_is_sent(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    files = Files(stack, world.token)
    guid = world.draft(to=[world.user("r")])
    (place,) = files.placeholders(guid, {"big.iso": CHUNK_BYTES + 1})
    assert files.upload(place["attachmentGuid"], 1, b"\0" * CHUNK_BYTES).status_code == 200

    status = assert_error(
        world.send(guid),
        400,
        "ValidationException",
        "Attachments not completely uploaded: 'big.iso'.",
    )
    assert [(e["fieldName"], e["errorCode"]) for e in status["errors"]] == [
        ("Attachments", "Incomplete")
    ]
    assert files.message(guid).json()["status"] == "Draft"
    assert files.message(guid).json()["attachments"][0]["status"] == "Uploading"
    # Rule 14 comes first: a draft without recipients says so.
    empty = world.draft()
    files.placeholders(empty, {"a.txt": 1})
    assert_error(world.send(empty), 400, "ValidationException", "'To' must not be empty.")


def test_each_limit_is_refused_at_pre_create_naming_the_file(stack: Stack, unique: str) -> None:
    world = World(
        stack,
        unique,
        limits={
            "maxAttachmentBytes": 1000,
            "maxMessageBytes": 1500,
            "attachmentTypes": ["pdf", ".TXT"],
        },
    ).setup()
    files = Files(stack, world.token)
    guid = world.draft()

    status = assert_error(
        files.precreate(guid, {"a.pdf": 10, "b.exe": 10}),
        400,
        "ValidationException",
        "'b.exe' is not a type of file your group may send (allowed: pdf, txt).",
    )
    assert status["errors"][0]["fieldName"] == "AttachmentPlaceholders[1].FileName"
    assert_error(
        files.precreate(guid, {"big.pdf": 1001}),
        400,
        "ValidationException",
        "'big.pdf' is 1001 bytes; a file may be at most 1000 bytes.",
    )
    files.placeholders(guid, {"one.txt": 1000})
    assert_error(
        files.precreate(guid, {"two.pdf": 501}),
        400,
        "ValidationException",
        "With 'two.pdf' the message's files are 1501 bytes; a message's files may be at "
        "most 1500 bytes.",
    )
    for size in (-1, 2**63):
        answer = files.precreate(guid, {"n.pdf": size})
        assert answer.status_code == 400, answer.text
        assert answer.json()["responseStatus"]["errorCode"] == "ValidationException"
    with stack.client() as client:
        settings = client.get(
            "/api/v1/service/settings", headers={"x-sm-session-token": world.token}
        ).json()
    assert settings["maxMessageFileSizeBytes"] == 1000
    assert settings["attachmentTypes"] == ["pdf", "txt"]


def test_only_the_drafts_sender_pre_creates_uploads_and_removes(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    _, stranger = _reader(world)
    files = Files(stack, world.token)
    guid = world.draft()
    (place,) = files.placeholders(guid, {"a.txt": 3})
    attachment = place["attachmentGuid"]

    assert_error(stranger.precreate(guid, {"b.txt": 1}), 404, "929", "Message not found")
    assert_error(stranger.upload(attachment, 1, b"abc"), 404, "929", "Message not found")
    assert_error(stranger.remove(guid, attachment), 404, "929", "Message not found")
    assert_error(stranger.download(attachment), 404, "929", "Message not found")
    unknown = secrets.token_hex(16)
    assert_error(files.upload(unknown, 1, b"abc"), 404, "929", "Message not found")
    assert_error(files.remove(guid, unknown), 404, "929", "Message not found")
    assert_error(files.download(unknown), 404, "929", "Message not found")


def test_recipients_download_as_get_message_reads(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader, reader_files = _reader(world)
    _, stranger = _reader(world)

    guid, attachment = _sent_with_file(world, reader, b"hello")
    assert_error(stranger.download(attachment), 404, "929", "Message not found")
    assert reader_files.download(attachment).content == b"hello"
    with stack.client() as client:
        recalled = client.post(
            f"/api/v1/messages/{guid}/recall", json={}, headers={"x-sm-session-token": world.token}
        )
    assert recalled.status_code == 200, recalled.text
    assert_error(reader_files.download(attachment), 403, "915", "The message has been recalled.")
    assert Files(stack, world.token).download(attachment).content == b"hello"

    guid, attachment = _sent_with_file(world, reader, b"soon gone")
    with stack.database.write_session() as session:
        session.execute(
            update(Message)
            .where(Message.guid == guid)
            .values(expiry_date=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert_error(reader_files.download(attachment), 403, "76", "Message Expiry is invalid.")


def test_a_fyeo_file_needs_the_password_header(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader, reader_files = _reader(world)
    _, attachment = _sent_with_file(world, reader, b"secret", fyeoType="UniquePassword")

    assert_error(
        reader_files.download(attachment), 403, "51", "You must pass FYEO message password."
    )
    wrong = base64.b64encode(b"nope").decode()
    assert_error(
        reader_files.download(attachment, **{"x-sm-password": wrong}),
        403,
        "38",
        "Incorrect For Your Eyes Only password.",
    )
    right = base64.b64encode(b"fyeo-password").decode()
    assert reader_files.download(attachment, **{"x-sm-password": right}).content == b"secret"


def test_a_forward_carries_the_files_and_a_reply_does_not(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    reader, reader_files = _reader(world)
    guid, attachment = _sent_with_file(world, reader, b"pass it on")

    with stack.client() as client:
        forward, reply = (
            client.post(
                "/api/v1/messages/",
                json={"actionCode": action, "parentGuid": guid},
                headers={"x-sm-session-token": reader_files.token},
            ).json()["messageGuid"]
            for action in ("Forward", "Reply")
        )
    assert reader_files.message(reply).json()["attachments"] == []
    (copy,) = reader_files.message(forward).json()["attachments"]
    assert copy["fileName"] == "notes.txt" and copy["status"] == "Complete"
    assert copy["guid"] != attachment
    assert reader_files.download(copy["guid"]).content == b"pass it on"
    # Removing the copy leaves the original whole.
    assert reader_files.remove(forward, copy["guid"]).status_code == 200
    assert reader_files.download(attachment).content == b"pass it on"


def test_multipart_garbage_and_bodies_past_a_chunk_are_clear_errors(
    stack: Stack, unique: str
) -> None:
    world = World(stack, unique).setup()
    files = Files(stack, world.token)
    (place,) = files.placeholders(world.draft(), {"a.bin": 4})
    url = f"/api/v1/attachments/{place['attachmentGuid']}/chunk/1"
    headers = {"x-sm-session-token": world.token}
    garbage: list[tuple[bytes, str]] = [
        (b"", "multipart/form-data"),
        (b"no boundary here", f"multipart/form-data; boundary={BOUNDARY}"),
        (f"--{BOUNDARY}\r\nbroken".encode(), f"multipart/form-data; boundary={BOUNDARY}"),
        # Not a file and not named `upload` (a lone file part of any name is taken, as
        # ServiceStack takes `Request.Files[0]`).
        (
            multipart(b"abcd", name="other", file=False)[0],
            f"multipart/form-data; boundary={BOUNDARY}",
        ),
        (secrets.token_bytes(300), 'multipart/form-data; boundary="x"'),
    ]
    with stack.client() as client:
        for body, content_type in garbage:
            answer = client.post(
                url, content=body, headers={**headers, "Content-Type": content_type}
            )
            assert answer.status_code == 400, (body[:40], answer.text)
            assert answer.json()["responseStatus"]["errorCode"] == "ValidationException"
        too_big = client.post(
            url,
            content=b"\0" * (CHUNK_BYTES + 65 * 1024),
            headers={**headers, "Content-Type": "application/octet-stream"},
        )
        assert too_big.status_code == 413, too_big.text
        bad_session = client.post(
            url,
            content=b"garbage",
            headers={"x-sm-session-token": "nope", "Content-Type": "multipart/form-data"},
        )
    assert bad_session.status_code == 401
    # Nothing was stored by any of these: the right bytes still go in.
    assert files.upload(place["attachmentGuid"], 1, b"abcd").status_code == 200


def test_no_plain_file_byte_is_stored(stack: Stack, unique: str) -> None:
    world = World(stack, unique).setup()
    files = Files(stack, world.token)
    marker = f"MARKER-{unique}-".encode() * 50
    (place,) = files.placeholders(world.draft(), {"m.txt": len(marker)})
    files.upload_all(place, marker)

    with stack.database.read_session() as session:
        rows = session.execute(text("SELECT digest, sealed FROM attachment_chunks")).all()
        keys = session.execute(text("SELECT sealed_key FROM attachments")).all()
    stored = b"".join(bytes(r.digest) + bytes(r.sealed or b"") for r in rows)
    stored += b"".join(bytes(k.sealed_key) for k in keys)
    assert stored and f"MARKER-{unique}".encode() not in stored
    assert files.download(place["attachmentGuid"]).content == marker

"""Attachments in-process, on both databases: files kept in ATTACHMENTS_DIR, drafts and
their files past retention, what sealing binds, and the bodies each SDK uploads."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from starlette.requests import Request

from api_shim.multipart import uploaded_bytes
from api_shim.wire import client_base_url
from tests.factories import DomainWorld
from worker.attachment_files import FolderChunks
from worker.db import Database
from worker.domain import attachments, retention
from worker.domain.attachments import Placeholder, RowChunks
from worker.domain.errors import ApiError
from worker.domain.secrets import Keys, SealBroken
from worker.models import Attachment, AttachmentChunk, Message, MessageAction
from worker.settings import Settings


@pytest.fixture
def world(module_database: tuple[Settings, Database], unique: str) -> DomainWorld:
    settings, database = module_database
    return DomainWorld(database, settings, unique).setup()


def _file(world: DomainWorld, draft: str, data: bytes, store: attachments.ChunkStore) -> str:
    """A file of `draft` holding `data`, every chunk uploaded; its GUID."""
    caller = world.login(world.sender)
    with world.database.write_session() as session:
        (created,) = attachments.precreate_attachments(
            session,
            caller=caller,
            message_guid=draft,
            placeholders=[Placeholder("f.bin", len(data))],
            keys=world.keys,
            now=world.now,
        )
    for chunk in created.chunks:
        with world.database.write_session() as session:
            attachments.store_chunk(
                session,
                caller=caller,
                attachment_guid=created.guid,
                number=chunk.number,
                data=data[chunk.start : chunk.end],
                keys=world.keys,
                store=store,
            )
    return created.guid


def _download(world: DomainWorld, guid: str, store: attachments.ChunkStore) -> bytes:
    caller = world.login(world.sender)
    with world.database.write_session() as session:
        download = attachments.open_download(
            session,
            caller=caller,
            attachment_guid=guid,
            fyeo_password=None,
            keys=world.keys,
            now=world.now,
        )
    parts = []
    for number in range(1, download.chunk_count + 1):
        with world.database.read_session() as session:
            parts.append(
                attachments.read_chunk(session, download=download, number=number, store=store)
            )
    return b"".join(parts)


def _chunk_rows(database: Database, guid: str) -> int:
    with database.read_session() as session:
        key = session.scalar(select(Attachment.content_key).where(Attachment.guid == guid))
        return int(
            session.scalar(
                select(func.count())
                .select_from(AttachmentChunk)
                .where(AttachmentChunk.content_key == key)
            )
            or 0
        )


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[FolderChunks]:
    yield FolderChunks(tmp_path / "attachments")


def test_a_folder_keeps_the_sealed_chunks_and_loses_them_with_the_file(
    world: DomainWorld, folder: FolderChunks
) -> None:
    marker = b"PLAIN-MARKER" * 300_000  # 3.6 MB: two chunks
    draft = world.draft()
    guid = _file(world, draft, marker, folder)

    files = [p for p in folder.folder.rglob("*") if p.is_file()]
    assert len(files) == 2
    assert all(b"PLAIN-MARKER" not in p.read_bytes() for p in files)
    with world.database.read_session() as session:
        assert session.scalars(select(AttachmentChunk.sealed)).all().count(None) >= 2
    assert _download(world, guid, folder) == marker

    with world.database.write_session() as session:
        attachments.remove_attachment(
            session,
            caller=world.login(world.sender),
            message_guid=None,
            attachment_guid=guid,
            store=folder,
        )
    assert not any(p.is_file() for p in folder.folder.rglob("*"))
    assert _chunk_rows(world.database, guid) == 0


def test_drafts_past_retention_go_with_their_files_and_shared_content_stays(
    world: DomainWorld,
) -> None:
    store = RowChunks()
    stale, fresh = world.draft(), world.draft()
    stale_file = _file(world, stale, b"stale", store)
    fresh_file = _file(world, fresh, b"fresh", store)
    sent = world.draft(to=[world.user("r")])
    sent_file = _file(world, sent, b"sent", store)
    assert world.send(sent).http_status == 200
    forward = world.draft(action=MessageAction.FORWARD, parent=sent)
    _copy_for_forward(world, sent, forward)
    later = world.now + timedelta(days=31)
    world.update_message(fresh, saved_at=later - timedelta(days=1))

    with world.database.write_session() as session:
        pruned = retention.prune_batch(
            session,
            now=later,
            keep=timedelta(days=7),
            checkpoint=world.now - timedelta(days=365),
            limit=1000,
            keep_drafts=timedelta(days=30),
            store=store,
        )
    assert pruned.drafts >= 2 and pruned.attachments >= 2  # `stale` and the forward
    assert _chunk_rows(world.database, stale_file) == 0
    assert _chunk_rows(world.database, fresh_file) == 1
    assert _download(world, sent_file, store) == b"sent"  # the forward's copy shared it


def _copy_for_forward(world: DomainWorld, parent: str, forward: str) -> None:
    """What PreCreateMessage does for a Forward: the parent's files, shared."""
    with world.database.write_session() as session:
        parent_id, forward_id = (
            session.scalar(select(Message.id).where(Message.guid == g)) for g in (parent, forward)
        )
        assert parent_id is not None and forward_id is not None
        attachments.copy_for_forward(
            session, parent_id=parent_id, message_id=forward_id, now=world.now
        )


def test_a_sealed_chunk_opens_only_as_itself() -> None:
    keys = Keys("k" * 32)
    file_key, sealed_key = keys.new_file_key("content-a")
    sealed = file_key.seal_chunk(1, b"chunk one")

    assert keys.open_file_key("content-a", sealed_key).open_chunk(1, sealed) == b"chunk one"
    with pytest.raises(SealBroken):
        file_key.open_chunk(2, sealed)  # moved to another place in the file
    with pytest.raises(SealBroken):
        keys.open_file_key("content-b", sealed_key)  # another file's key
    with pytest.raises(SealBroken):
        Keys("another secret").open_file_key("content-a", sealed_key)
    assert file_key.digest(b"x") != keys.new_file_key("content-a")[0].digest(b"x")


CHUNK = secrets.token_bytes(64) + b"\r\n--not-the-boundary\r\n" + secrets.token_bytes(64)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(  # Java (Spring): a charset before the boundary, a part type
            b'--Ab1_-\r\nContent-Disposition: form-data; name="upload"; filename="f"\r\n'
            b"Content-Type: application/octet-stream\r\nContent-Length: 150\r\n\r\n"
            + CHUNK
            + b"\r\n--Ab1_---\r\n",
            "multipart/form-data;charset=UTF-8;boundary=Ab1_-",
            id="java",
        ),
        pytest.param(  # C# (ServiceStack): text parts first, no spaces, no final CRLF
            b"--------------------------------abc\r\n"
            b'Content-Disposition: form-data;name="AttachmentGuid"\r\n'
            b"Content-Type: text/plain;charset=utf-8\r\n\r\n0123\r\n"
            b"--------------------------------abc\r\n"
            b'Content-Disposition: form-data;name="upload";filename="f"\r\n\r\n'
            + CHUNK
            + b"\r\n--------------------------------abc--",
            "multipart/form-data; boundary=------------------------------abc",
            id="csharp",
        ),
        pytest.param(  # PHP (Guzzle): a guessed part type
            b'--0f0f\r\nContent-Disposition: form-data; name="upload"; filename="a.pdf"\r\n'
            b"Content-Length: 150\r\nContent-Type: application/pdf\r\n\r\n"
            + CHUNK
            + b"\r\n--0f0f--\r\n",
            'multipart/form-data; boundary="0f0f"',
            id="php",
        ),
        pytest.param(CHUNK, "application/octet-stream", id="bytes"),
    ],
)
def test_each_clients_body_gives_the_chunk(body: bytes, content_type: str) -> None:
    assert uploaded_bytes(body, content_type) == CHUNK


def _request(client: str, **headers: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "scheme": "http",
            "server": ("10.0.0.5", 8080),
            "client": (client, 5000),
            "path": "/api/v1/attachments/precreate",
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            + [(b"host", b"10.0.0.5:8080")],
        }
    )


def test_upload_uris_follow_a_trusted_proxy_only() -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "mail.example.com"}
    assert client_base_url(_request("10.0.0.9", **forwarded), "") == "http://10.0.0.5:8080"
    assert client_base_url(_request("10.0.0.9", **forwarded), "10.0.0.1") == (
        "http://10.0.0.5:8080"
    )
    assert client_base_url(_request("10.0.0.1", **forwarded), "10.0.0.1, 10.0.0.2") == (
        "https://mail.example.com"
    )
    assert client_base_url(_request("10.0.0.1", **forwarded), "*") == "https://mail.example.com"
    evil = {"X-Forwarded-Host": "a.com/evil?x=", "X-Forwarded-Proto": "javascript"}
    assert client_base_url(_request("10.0.0.1", **evil), "*") == "http://10.0.0.5:8080"


def test_a_stranger_cannot_pre_create_on_a_draft(world: DomainWorld) -> None:
    other = world.user("other", password="other password")
    with world.database.write_session() as session, pytest.raises(ApiError) as refused:
        attachments.precreate_attachments(
            session,
            caller=world.login(other),
            message_guid=world.draft(),
            placeholders=[Placeholder("a.txt", 1)],
            keys=world.keys,
            now=world.now,
        )
    assert refused.value.kind.code == "929"

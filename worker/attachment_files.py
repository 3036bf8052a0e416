"""Attachment chunks kept in a folder (`ATTACHMENTS_DIR`, a volume every host mounts)
instead of in their database rows: the same sealed bytes, one file per chunk.

A chunk's file is named by its number and the first bytes of its digest, and written
under a temporary name then renamed: two uploads of one chunk with different bytes can
never overwrite the kept one (the database row says which digest is kept). Files of a
content are deleted once the transaction that forgot it commits; a file left by a
transaction that failed is not named by any row and harms nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

from worker.domain.attachments import ChunkStore, RowChunks
from worker.settings import Settings

logger = logging.getLogger(__name__)


class FolderChunks:
    in_rows = False

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _content(self, content_key: str) -> Path:
        return self.folder / content_key[:2] / content_key

    def _path(self, content_key: str, number: int, digest: bytes) -> Path:
        return self._content(content_key) / f"{number}-{digest.hex()[:16]}"

    def keep(self, content_key: str, number: int, digest: bytes, sealed: bytes) -> None:
        path = self._path(content_key, number, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        with partial.open("wb") as out:
            out.write(sealed)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(path)

    def fetch(self, content_key: str, number: int, digest: bytes) -> bytes:
        return self._path(content_key, number, digest).read_bytes()

    def forget(self, session: Session, content_keys: Sequence[str]) -> None:
        folders = [self._content(key) for key in content_keys]

        def remove(_: Session) -> None:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)

        event.listen(session, "after_commit", remove, once=True)


def make_chunk_store(settings: Settings) -> ChunkStore:
    """The database's rows, or ATTACHMENTS_DIR when it is set."""
    if settings.attachments_dir is None:
        return RowChunks()
    return FolderChunks(settings.attachments_dir.resolve())

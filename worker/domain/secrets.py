"""Hashing, tokens and sealing: how secrets are stored and compared.

- Passwords (account, FYEO UniquePassword) and CRA codes: argon2id, verified by argon2
  (constant time).
- Session, invitation and authentication tokens: 256 random bits; only an HMAC-SHA256
  keyed from SECRET_KEY is stored, so a leaked table cannot be replayed and lookups stay
  indexable (`Keys.token_digest`).
- Sealed values (secret job fields, outbox content): Fernet with a key derived from
  SECRET_KEY (`Keys.seal`).
- Attachments: each file's chunks are sealed with AES-256-GCM under a data key of its
  own (`FileKey`), bound to the file's content and the chunk's number; the data key is
  stored sealed with AES-GCM under a key derived from SECRET_KEY (`Keys.new_file_key`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_hasher = PasswordHasher()


def hash_password(plain: str) -> str:
    return _hasher.hash(plain)


def verify_password(stored_hash: str | None, plain: str) -> bool:
    """True when `plain` matches; False for a missing hash or any mismatch."""
    if not stored_hash:
        return False
    try:
        return _hasher.verify(stored_hash, plain)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


class SealBroken(ValueError):
    """A sealed value was tampered with or sealed under another SECRET_KEY."""


NONCE_BYTES = 12


class FileKey:
    """One attachment content's data key: seals and opens its chunks (AES-256-GCM, each
    chunk bound to the content and its number, so no chunk can stand in for another)
    and digests a chunk's plain bytes (HMAC-SHA256: an upload again is compared by it,
    and the digest tells nothing without the key)."""

    def __init__(self, key: bytes, content_key: str) -> None:
        self._key = key
        self._aead = AESGCM(key)
        self._content_key = content_key.encode()

    def _bound(self, number: int) -> bytes:
        return self._content_key + b":" + str(number).encode()

    def seal_chunk(self, number: int, plain: bytes | bytearray | memoryview) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, self._bound(number))

    def open_chunk(self, number: int, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self._bound(number)
            )
        except InvalidTag as e:
            raise SealBroken("an attachment chunk cannot be opened with its key") from e

    def digest(self, plain: bytes | bytearray | memoryview) -> bytes:
        return hmac.new(self._key, plain, hashlib.sha256).digest()


class Keys:
    """What SECRET_KEY gives: a key to digest tokens with and one to seal values with,
    each derived for its purpose (never the secret itself). One per process, in its
    runtime, passed to whatever digests or seals."""

    def __init__(self, secret_key: str) -> None:
        self._digest_key = _derived(secret_key, "token-digest")
        self._fernet = Fernet(base64.urlsafe_b64encode(_derived(secret_key, "seal")))
        self._file_keys = AESGCM(_derived(secret_key, "attachment-key"))
        self._return_path_key = _derived(secret_key, "return-path")

    def token_digest(self, token: str) -> str:
        """An HMAC-SHA256 of a token: what is stored and looked up, never the token."""
        return hmac.new(self._digest_key, token.encode(), hashlib.sha256).hexdigest()

    def seal(self, plain: str) -> str:
        """Encrypt (and authenticate) a value."""
        return self._fernet.encrypt(plain.encode()).decode()

    def unseal(self, sealed: str) -> str:
        """Raises SealBroken for a value tampered with or sealed under another key."""
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as e:
            raise SealBroken("sealed value cannot be opened with this SECRET_KEY") from e

    def return_path_tag(self, email_id: int) -> str:
        """The tag that binds a return path to email `email_id` (worker.domain.bounces):
        80 bits of an HMAC, lower-case hex."""
        mac = hmac.new(self._return_path_key, str(email_id).encode(), hashlib.sha256)
        return mac.hexdigest()[:20]

    def new_file_key(self, content_key: str) -> tuple[FileKey, bytes]:
        """A new data key for an attachment's content, and that key sealed to store."""
        key = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = nonce + self._file_keys.encrypt(nonce, key, content_key.encode())
        return FileKey(key, content_key), sealed

    def open_file_key(self, content_key: str, sealed: bytes) -> FileKey:
        """The data key `new_file_key` sealed; SealBroken under another SECRET_KEY."""
        try:
            key = self._file_keys.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], content_key.encode()
            )
        except InvalidTag as e:
            raise SealBroken("an attachment key cannot be opened with this SECRET_KEY") from e
        return FileKey(key, content_key)


def _derived(secret_key: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from the secret."""
    return hashlib.blake2b(
        secret_key.encode(), digest_size=32, person=b"securesend", salt=purpose.encode()[:16]
    ).digest()

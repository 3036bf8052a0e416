"""Hashing, tokens and sealing: how secrets are stored and compared.

- Passwords (account, FYEO UniquePassword) and CRA codes: argon2id, verified by argon2
  (constant time).
- Session and invitation tokens: 256 random bits; only an HMAC-SHA256 keyed from
  SECRET_KEY is stored, so a leaked table cannot be replayed and lookups stay indexable.
- Sealed values (secret job fields, outbox content): Fernet with a key derived from
  SECRET_KEY.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

from worker.settings import get_settings

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


def token_digest(token: str) -> str:
    key = get_settings().derived_key("token-digest")
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


@lru_cache(maxsize=4)
def _fernet(key: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(key))


def seal(plain: str) -> str:
    """Encrypt (and authenticate) a value with the key derived from SECRET_KEY."""
    return _fernet(get_settings().derived_key("seal")).encrypt(plain.encode()).decode()


class SealBroken(ValueError):
    """A sealed value was tampered with or sealed under another SECRET_KEY."""


def unseal(token: str) -> str:
    try:
        return _fernet(get_settings().derived_key("seal")).decrypt(token.encode()).decode()
    except InvalidToken as e:
        raise SealBroken("sealed value cannot be opened with this SECRET_KEY") from e

"""Hashing, tokens and sealing: how secrets are stored and compared.

- Passwords (account, FYEO UniquePassword) and CRA codes: argon2id, verified by argon2
  (constant time).
- Session, invitation and authentication tokens: 256 random bits; only an HMAC-SHA256
  keyed from SECRET_KEY is stored, so a leaked table cannot be replayed and lookups stay
  indexable (`Keys.token_digest`).
- Sealed values (secret job fields, outbox content): Fernet with a key derived from
  SECRET_KEY (`Keys.seal`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

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


class Keys:
    """What SECRET_KEY gives: a key to digest tokens with and one to seal values with,
    each derived for its purpose (never the secret itself). One per process, in its
    runtime, passed to whatever digests or seals."""

    def __init__(self, secret_key: str) -> None:
        self._digest_key = _derived(secret_key, "token-digest")
        self._fernet = Fernet(base64.urlsafe_b64encode(_derived(secret_key, "seal")))

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


def _derived(secret_key: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from the secret."""
    return hashlib.blake2b(
        secret_key.encode(), digest_size=32, person=b"securesend", salt=purpose.encode()[:16]
    ).digest()

"""Encryption at rest for stored provider keys: Fernet through ``MultiFernet``.

Keys are given newest first. New ciphertexts always use the newest key; any listed key decrypts,
so an operator rotates by prepending a new key, running ``litellm-plugins byok rotate`` (which
re-encrypts every row under the newest key) and only then dropping the old one. Each row records
the *fingerprint* of the key that encrypted it (a truncated SHA-256 of the key, which reveals
nothing usable), so rotation can tell which rows are done and resume after an interruption.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr


class VaultKeyError(Exception):
    """A stored key cannot be decrypted with any configured encryption key."""


def _raw(key: SecretStr | str) -> str:
    return key.get_secret_value() if isinstance(key, SecretStr) else key


def invalid_key_indexes(keys: Sequence[SecretStr | str]) -> list[int]:
    bad = []
    for index, key in enumerate(keys):
        try:
            Fernet(_raw(key).encode())
        except (ValueError, TypeError):
            bad.append(index)
    return bad


def fingerprint(key: SecretStr | str) -> str:
    return hashlib.sha256(b"litellm-plugins-byok:" + _raw(key).encode()).hexdigest()[:16]


class Cipher:
    """Encrypts with the newest key, decrypts with any; never logs or reprs a key."""

    def __init__(self, keys: Sequence[SecretStr | str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(_raw(k).encode()) for k in keys])
        self.current_key_id = fingerprint(keys[0])
        self.key_ids = tuple(fingerprint(k) for k in keys)

    def __repr__(self) -> str:
        return f"Cipher(current_key_id={self.current_key_id!r}, keys={len(self.key_ids)})"

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise VaultKeyError("stored key cannot be decrypted with any configured encryption key") from None

    def reencrypt(self, token: str) -> str:
        """Re-encrypt under the newest key (``MultiFernet.rotate``), keeping the original timestamp."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise VaultKeyError("stored key cannot be decrypted with any configured encryption key") from None


def mask(secret: str) -> str:
    """The only form a stored key is ever shown in: its last 4 characters."""
    return "…" + secret[-4:] if len(secret) >= 8 else "…"

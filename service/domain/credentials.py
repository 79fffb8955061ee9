"""App credentials: generation and a constant-time check against the stored digest.

The master secret is 32 random bytes (URL-safe base64), so a plain SHA-256 digest is enough: nothing can
be guessed back from it, and it is cheap enough to check on every request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

# Compared against when the app key is unknown, so a wrong key costs the same as a wrong secret.
_DECOY_DIGEST = hashlib.sha256(b"no such app").digest()


APP_KEY_LENGTH = 24
_APP_KEY_SHAPE = re.compile(f"[0-9a-f]{{{APP_KEY_LENGTH}}}", re.ASCII)


def new_app_key() -> str:
    return secrets.token_hex(APP_KEY_LENGTH // 2)


def could_be_app_key(app_key: str) -> bool:
    """Whether `app_key` has the shape of the keys new_app_key makes (24 lowercase hex digits)."""
    return _APP_KEY_SHAPE.fullmatch(app_key) is not None


# Webhook tokens (issue 13): 256 random bits, URL-safe, with a prefix that says what they are (a secret scanner
# can find one pasted where it should not be). Stored only as digest(token), like a master secret.
WEBHOOK_TOKEN_PREFIX = "whk_"
_WEBHOOK_TOKEN_SHAPE = re.compile(rf"{WEBHOOK_TOKEN_PREFIX}[A-Za-z0-9_-]{{43}}", re.ASCII)


def new_webhook_token() -> str:
    return WEBHOOK_TOKEN_PREFIX + secrets.token_urlsafe(32)


def could_be_webhook_token(token: str) -> bool:
    """Whether `token` has the shape new_webhook_token makes: any other is refused without a query."""
    return _WEBHOOK_TOKEN_SHAPE.fullmatch(token) is not None


def new_master_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(master_secret: str) -> bytes:
    return hashlib.sha256(master_secret.encode("utf-8")).digest()


def secret_matches(master_secret: str, stored_digest: bytes | None) -> bool:
    """Constant-time comparison; `stored_digest` None (unknown app) still does the same work and fails."""
    expected = stored_digest if stored_digest is not None else _DECOY_DIGEST
    matches = hmac.compare_digest(digest(master_secret), expected)
    return matches and stored_digest is not None


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """`Basic base64(app_key:master_secret)` -> (app_key, master_secret); None when malformed."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    # Base64 is ASCII: any other byte (latin-1 or UTF-8 in the header) is malformed, not an error of ours.
    if scheme.lower() != "basic" or not encoded.strip() or not encoded.isascii():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    app_key, separator, master_secret = decoded.partition(":")
    if not separator or not app_key or not master_secret:
        return None
    return app_key, master_secret


def new_encryption_key() -> str:
    """A fresh PUSH_CREDENTIALS_KEY (Fernet: 32 random bytes, URL-safe base64)."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def encrypt_push_secret(push_secret: str, key: str) -> bytes:
    """Authenticated encryption (Fernet) of an app's push secret; ValueError for a malformed key."""
    from cryptography.fernet import Fernet

    return Fernet(key.encode()).encrypt(push_secret.encode("utf-8"))


def decrypt_push_secret(token: bytes, key: str) -> str:
    """The push secret back; ValueError when the key is wrong or the token was altered."""
    from cryptography.fernet import Fernet, InvalidToken

    try:
        return Fernet(key.encode()).decrypt(token).decode("utf-8")
    except InvalidToken:
        raise ValueError("push secret cannot be decrypted with PUSH_CREDENTIALS_KEY") from None


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")

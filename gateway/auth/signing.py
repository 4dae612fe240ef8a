"""The request signature scheme of the API (issue #14; clients depend on it byte for byte).

A request carries ``X-API-KEY`` (the key id), ``X-TIMESTAMP`` (Unix epoch milliseconds) and
``X-SIGNATURE``: base64 (standard alphabet, padded) of the Ed25519 signature of::

    timestamp + METHOD + request_target + body

as bytes: the timestamp exactly as sent in ``X-TIMESTAMP``, the method upper-case, the
request target as sent on the wire (the raw path with its query string, percent-encoding
kept: ASGI ``raw_path`` + ``?`` + ``query_string``) and the raw body (empty for a GET).

Keys: the client keeps the private key; the server stores only the public key, as the base64
of its 32 raw bytes. A key's id is derived from its public key, so a key id names exactly
one public key everywhere: ``"k" + sha256(raw_public_key).hexdigest()[:24]``. The first
operator's key is configuration and its id is ``operator``.

Verification is :meth:`Ed25519PublicKey.verify` (OpenSSL): it recomputes the signature's R
and compares it in constant time (``CRYPTO_memcmp``), so no comparison here leaks timing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

HEADER_KEY = "X-API-KEY"
HEADER_TIMESTAMP = "X-TIMESTAMP"
HEADER_SIGNATURE = "X-SIGNATURE"
OPERATOR_KEY_ID = "operator"

KeyLike = Ed25519PrivateKey | bytes | str


def message(
    timestamp: int | str | bytes, method: str | bytes, target: str | bytes, body: bytes | str
) -> bytes:
    """The bytes that are signed: ``timestamp + METHOD + request_target + body``."""
    ts = timestamp if isinstance(timestamp, bytes) else str(timestamp).encode()
    m = method if isinstance(method, bytes) else method.encode()
    t = target if isinstance(target, bytes) else target.encode()
    b = body if isinstance(body, bytes) else body.encode()
    return ts + m.upper() + t + b


def private_key(key: KeyLike) -> Ed25519PrivateKey:
    """A private key from itself, its 32 raw bytes, or their base64 (a key file's line)."""
    if isinstance(key, Ed25519PrivateKey):
        return key
    raw = key if isinstance(key, bytes) else _b64decode(key.strip())
    if raw is None or len(raw) != 32:
        raise ValueError("an Ed25519 private key is 32 raw bytes (base64 in a key file)")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key(public_key_b64: str) -> Ed25519PublicKey | None:
    """The public key of a base64 string of 32 raw bytes; None if it is not one."""
    raw = _b64decode(public_key_b64)
    if raw is None or len(raw) != 32:
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return None


def sign(
    private_key_: KeyLike, timestamp_ms: int | str, method: str, target: str | bytes,
    body: bytes | str = b"",
) -> str:  # fmt: skip
    """``X-SIGNATURE`` of a request: base64 of the Ed25519 signature of :func:`message`."""
    signature = private_key(private_key_).sign(message(timestamp_ms, method, target, body))
    return base64.b64encode(signature).decode("ascii")


def verify(
    public_key_b64: str | Ed25519PublicKey, timestamp_ms: int | str | bytes, method: str | bytes,
    target: str | bytes, body: bytes | str, signature_b64: str | bytes,
) -> bool:  # fmt: skip
    """True when ``signature_b64`` is the key's signature of the request; never raises."""
    key = public_key(public_key_b64) if isinstance(public_key_b64, str) else public_key_b64
    if key is None:
        return False
    signature = _b64decode(signature_b64)
    if signature is None or len(signature) != 64:
        return False
    try:
        key.verify(signature, message(timestamp_ms, method, target, body))
    except InvalidSignature:
        return False
    return True


def signed_headers(
    private_key_: KeyLike, api_key: str, timestamp_ms: int, method: str, target: str | bytes,
    body: bytes | str = b"",
) -> dict[str, str]:  # fmt: skip
    """The three headers of a signed request."""
    return {
        HEADER_KEY: api_key,
        HEADER_TIMESTAMP: str(timestamp_ms),
        HEADER_SIGNATURE: sign(private_key_, timestamp_ms, method, target, body),
    }


# ---- keys -----------------------------------------------------------------------------


def key_id(public_key_b64: str) -> str:
    """The id of a key: ``"k" + sha256(raw public key).hexdigest()[:24]``."""
    raw = _b64decode(public_key_b64)
    if raw is None or len(raw) != 32:
        raise ValueError("a public key is the base64 of 32 raw bytes")
    return "k" + hashlib.sha256(raw).hexdigest()[:24]


def new_key_pair() -> tuple[str, str]:
    """A fresh key pair as (base64 raw private key, base64 raw public key)."""
    key = Ed25519PrivateKey.generate()
    return private_key_b64(key), public_key_b64(key)


def private_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode("ascii")


def public_key_b64(key: KeyLike) -> str:
    raw = private_key(key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def write_key_file(path: Path, private_b64: str) -> None:
    """Write a key file: one line, the base64 raw private key, mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as f:
        f.write(private_b64 + "\n")
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)  # an existing file keeps its mode otherwise


def read_key_file(path: Path) -> Ed25519PrivateKey:
    """The private key of a key file (ValueError naming the file if it holds none)."""
    try:
        return private_key(path.read_text().strip())
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _b64decode(text: str | bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


__all__ = [
    "HEADER_KEY",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "OPERATOR_KEY_ID",
    "key_id",
    "message",
    "new_key_pair",
    "public_key",
    "read_key_file",
    "sign",
    "signed_headers",
    "verify",
    "write_key_file",
]

"""Errors raised by the exchange adapters. All derive from ``engine.errors.ExchangeError``.

A driver error (fastavro, I/O) is re-raised as one of these with ``from e``, so callers catch
one project type and still see the original cause.
"""

from __future__ import annotations

from engine.errors import ExchangeError


class SchemaError(ExchangeError):
    """An Avro schema file is missing or invalid, or a schema cannot be registered."""


class EncodeError(ExchangeError):
    """A domain object could not be encoded: a bug upstream (wrong type, out-of-range int)."""


class DecodeError(ExchangeError):
    """Bytes from the wire are not a record this codec can read (framing, fingerprint, body)."""

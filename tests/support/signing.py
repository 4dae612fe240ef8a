"""Signed requests for tests and benchmarks (the client of :mod:`ops.apiclient`), plus a
signer with a fresh key pair."""

from __future__ import annotations

from gateway.auth.signing import new_key_pair
from ops.apiclient import Signer, now_ms, sign_request

__all__ = ["Signer", "new_signer", "now_ms", "sign_request"]


def new_signer() -> Signer:
    """A signer with a fresh key pair (its key id derived from its public key)."""
    return Signer(new_key_pair()[0])

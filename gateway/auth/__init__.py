"""Access: signed API keys (Ed25519), the key registry, roles and rate limits (issue #14).

* :mod:`gateway.auth.signing`: the signature scheme, client and server side (the contract).
* :mod:`gateway.auth.registry`: which keys exist, learnt from the store then the output stream.
* :mod:`gateway.auth.policy`: which role each route needs (one table).
* :mod:`gateway.auth.gate`: the ASGI gate that checks every request against the two above.
* :mod:`gateway.auth.ratelimit`: per-key limits.
"""

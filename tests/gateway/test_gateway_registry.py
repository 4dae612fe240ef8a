"""The key registry (gateway.auth.registry): the newest state by engine sequence wins."""

from __future__ import annotations

from engine.enums import Role
from gateway.auth.registry import KeyRegistry
from gateway.auth.signing import OPERATOR_KEY_ID
from tests.support.signing import new_signer


def _apply(registry: KeyRegistry, key: str, public: str, seq: int, **kw: object) -> bool:
    fields: dict[str, object] = {"user_id": 7, "role": "TRADER", "revoked": False, **kw}
    return registry.apply(api_key=key, public_key_b64=public, sequence=seq, **fields)  # type: ignore[arg-type]


def test_apply_when_states_arrive_out_of_order_keeps_the_newest_by_sequence() -> None:
    registry, signer = KeyRegistry(), new_signer()
    assert _apply(registry, signer.api_key, signer.public_key, 10, revoked=True)
    assert not _apply(registry, signer.api_key, signer.public_key, 5)  # older: ignored
    assert registry.lookup(signer.api_key) is None  # still revoked
    assert not _apply(registry, signer.api_key, signer.public_key, 10)  # same version
    assert _apply(registry, signer.api_key, signer.public_key, 11)
    principal = registry.lookup(signer.api_key)
    assert principal is not None and (principal.user_id, principal.role) == (7, Role.TRADER)


def test_apply_when_key_or_role_is_unusable_accepts_nothing() -> None:
    registry, signer = KeyRegistry(), new_signer()
    assert _apply(registry, "kbad", "not a key", 1)
    assert _apply(registry, signer.api_key, signer.public_key, 2, role="ROOT")
    assert registry.lookup("kbad") is None and registry.lookup(signer.api_key) is None


def test_operator_when_configured_cannot_be_replaced_from_the_log() -> None:
    registry, operator, other = KeyRegistry(), new_signer(), new_signer()
    registry.set_operator(operator.public_key)
    assert not _apply(registry, OPERATOR_KEY_ID, other.public_key, 99, role="OPERATOR")
    entry = registry.entry(OPERATOR_KEY_ID)
    assert entry is not None and entry.principal.role is Role.OPERATOR
    assert entry.principal.user_id is None

"""The operators' service: create users, add and revoke keys (issue #14).

Each is a command on the log (``CreateUser``, ``AddApiKey``, ``RevokeApiKey``), so a replay
rebuilds users and keys. The key id is computed here from the public key
(:func:`gateway.auth.signing.key_id`) and travels on the command; the engine assigns user
ids. An answer comes only once the engine has decided *and* this gateway's registry
(fed from the same output stream, before any waiter is answered; see
:mod:`gateway.auth.keyfeed`) accepts the new key or refuses the revoked one: 201/200 then
means the key works (or no longer works) here. Other gateways follow within their follower's
delay (milliseconds). When the engine does not answer in time the answer is 202 with the
command id, like every command.
"""

from __future__ import annotations

import time

from engine.commands import AddApiKey, Command, CreateUser, RevokeApiKey
from engine.enums import Role
from engine.events import EngineOutput
from gateway.auth.registry import KeyRegistry
from gateway.auth.signing import key_id, public_key
from gateway.bodies import parse_json, validate
from gateway.commands import CommandService, now_ms
from gateway.convert import INT64_MAX
from gateway.envelope import ok_body
from gateway.errors import ApiError, ErrorCode, clip
from gateway.schemas import AddApiKeyRequest, CreateUserRequest

# Engine reasons (RejectReason values) -> the answer.
_REFUSALS: dict[str, tuple[ErrorCode, str]] = {
    "DUPLICATE_API_KEY": (ErrorCode.DUPLICATE_API_KEY, "this public key is already registered"),
    "UNKNOWN_USER": (ErrorCode.USER_NOT_FOUND, "no such user"),
    "UNKNOWN_API_KEY": (ErrorCode.API_KEY_NOT_FOUND, "no such key"),
}
ADMIN_WAIT_MS = 10_000


class AdminService:
    """Publishes the admin commands and answers once this gateway applied their outcome."""

    def __init__(
        self, *, commands: CommandService, registry: KeyRegistry, wait_ms: int = ADMIN_WAIT_MS
    ) -> None:
        self._commands = commands
        self._registry = registry
        self._wait_ms = wait_ms

    async def create_user(self, body: bytes) -> tuple[int, bytes]:
        req = validate(CreateUserRequest, parse_json(body))
        api_key = _key_id(req.public_key)
        command = CreateUser(
            command_id=0, timestamp_ms=now_ms(), api_key=api_key, public_key=req.public_key,
            role=Role.TRADER, label=req.label,
        )  # fmt: skip
        offset, output = await self._run(command, api_key, accepted=True)
        if output is None:
            return _accepted(offset, api_key)
        user_id = next((u.user_id for u in output.user_creations), None)
        if user_id is None:
            user_id = next(u.user_id for u in output.api_key_updates if u.api_key == api_key)
        return 201, ok_body({"user_id": user_id, "api_key": api_key})

    async def add_key(self, user_id: str, body: bytes) -> tuple[int, bytes]:
        uid = _user_id(user_id)
        req = validate(AddApiKeyRequest, parse_json(body))
        api_key = _key_id(req.public_key)
        command = AddApiKey(
            command_id=0, timestamp_ms=now_ms(), user_id=uid, api_key=api_key,
            public_key=req.public_key,
        )  # fmt: skip
        offset, output = await self._run(command, api_key, accepted=True)
        if output is None:
            return _accepted(offset, api_key)
        return 201, ok_body({"api_key": api_key})

    async def revoke_key(self, api_key: str) -> tuple[int, bytes]:
        if not api_key or len(api_key) > 64:
            raise ApiError(ErrorCode.API_KEY_NOT_FOUND, f"no key {clip(api_key)}")
        command = RevokeApiKey(command_id=0, timestamp_ms=now_ms(), api_key=api_key)
        offset, output = await self._run(command, api_key, accepted=False)
        if output is None:
            return _accepted(offset, api_key)
        return 200, ok_body({"api_key": api_key, "revoked": True})

    async def _run(
        self, command: Command, api_key: str, *, accepted: bool
    ) -> tuple[int, EngineOutput | None]:
        """Publish, wait for the engine, refuse its rejections, then wait until this
        gateway's registry agrees; (offset, None) when either wait runs out."""
        started = time.monotonic()
        offset, output = await self._commands.publish_command(command, True, self._wait_ms)
        if output is None:
            return offset, None
        if output.rejections:
            reason = str(output.rejections[0].reason)
            code, message = _REFUSALS.get(reason, (ErrorCode.INVALID_REQUEST, reason))
            raise ApiError(code, message)
        left = self._wait_ms / 1000 - (time.monotonic() - started)
        if not await self._registry.wait_until(api_key, accepted, max(left, 0.0)):
            return offset, None
        return offset, output


def _key_id(public_key_b64: str) -> str:
    if public_key(public_key_b64) is None:
        raise ApiError(
            ErrorCode.INVALID_REQUEST,
            "public_key: not the base64 of a 32-byte raw Ed25519 public key",
        )
    return key_id(public_key_b64)


def _user_id(text: str) -> int:
    if not text.isdigit() or len(text.lstrip("0")) > 19 or not 1 <= int(text) <= INT64_MAX:
        raise ApiError(ErrorCode.USER_NOT_FOUND, f"no user {clip(text)}")
    return int(text)


def _accepted(offset: int, api_key: str) -> tuple[int, bytes]:
    return 202, ok_body({"command_id": str(offset), "api_key": api_key, "status": "ACCEPTED"})

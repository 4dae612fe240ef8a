"""Request bodies: read (bounded), parse as exact JSON, validate with the pydantic models.

Bodies are parsed here, not by FastAPI: ``json.loads(parse_float=Decimal)`` keeps every JSON
number exact, and the models of :mod:`gateway.schemas` validate the result. Every failure is
an :class:`~gateway.errors.ApiError` with the first error's field code.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from gateway.errors import ApiError, ErrorCode, clip
from gateway.schemas import FIELD_CODES

M = TypeVar("M", bound=BaseModel)


class _NonJsonConstant(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonJsonConstant(f"{name} is not JSON")


_decode_json = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant).decode


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; ApiError(REQUEST_TOO_LARGE) beyond ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        if length.isdigit() and int(length) > limit:
            raise ApiError(ErrorCode.REQUEST_TOO_LARGE, f"the body exceeds {limit} bytes")
        return await request.body()
    chunks: list[bytes] = []  # chunked: count as it streams in
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(ErrorCode.REQUEST_TOO_LARGE, f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """Parse a UTF-8 JSON document with exact decimals (see :mod:`gateway.convert`)."""
    try:
        return _decode_json(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, _NonJsonConstant, RecursionError) as e:
        detail = "the body is empty" if not body.strip() else f"the body is not valid JSON: {e}"
        raise ApiError(ErrorCode.MALFORMED_JSON, detail) from None
    except ValueError as e:  # e.g. an integer literal beyond Python's digit limit
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"a number in the body is too long: {e}"
        ) from None


def validate(model: type[M], data: Any) -> M:
    """``model`` from parsed JSON; ApiError with the first error's field code if invalid."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise body_error(e) from None


def body_error(e: ValidationError) -> ApiError:
    err = e.errors(include_url=False, include_context=False, include_input=False)[0]
    loc = err["loc"]
    kind = err["type"]
    if not loc:
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            return ApiError(ErrorCode.INVALID_REQUEST, "the body must be a JSON object")
        return ApiError(ErrorCode.INVALID_REQUEST, str(err["msg"]))
    field = clip(".".join(str(part) for part in loc), 60).strip("'")
    if kind == "extra_forbidden":
        return ApiError(ErrorCode.INVALID_REQUEST, f"{field}: unknown field")
    code = (
        ErrorCode.INVALID_REQUEST
        if kind == "missing"
        else FIELD_CODES.get(str(loc[0]), ErrorCode.INVALID_REQUEST)
    )
    return ApiError(code, f"{field}: {err['msg']}")

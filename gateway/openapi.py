"""The OpenAPI document: route documentation helpers and the spec builder.

Request bodies are parsed by :mod:`gateway.bodies`, not by FastAPI, so the spec names the
pydantic models of :mod:`gateway.schemas` as the request bodies itself (``body_doc``), adds
them as components, and drops FastAPI's 422 answers (the API answers 400 instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from gateway.auth.policy import Access, access_of
from gateway.schemas import REQUEST_MODELS, ErrorResponse

API_VERSION = "1.0.0"

API_DESCRIPTION = """\
REST gateway of the exchange. Commands go to the engine through the order log; reads come
from the settlement read model, which lags the engine by milliseconds.

* Every answer is an envelope: `{"success": true, "data": ...}` or
  `{"success": false, "error": {"code": "UPPER_SNAKE", "message": "..."}}`.
* Amounts are decimal strings (`"50000.00"`); a JSON number is read exactly as written.
* Ids assigned by the system (`order_id`, `trade_id`, `command_id`) are int64 as strings.
* Timestamps are epoch milliseconds.
* Every `/api/v1/...` route except market data is signed with an Ed25519 API key:
  `X-API-KEY` (the key id), `X-TIMESTAMP` (epoch ms, within 5 s of the server's clock) and
  `X-SIGNATURE`, the base64 Ed25519 signature of `timestamp + METHOD + request_target +
  body` (the raw path and query string as sent, the raw body). Traders act on their own
  account; operators manage users, keys and funds.
"""

Docs = dict[int | str, dict[str, Any]]


def error_doc(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


BAD: Docs = {400: error_doc("Invalid request (see the error code).")}
TOO_LARGE: Docs = {413: error_doc("The body is too large.")}
BROKER: Docs = {503: error_doc("BROKER_UNAVAILABLE: the command was not accepted.")}
STORE: Docs = {503: error_doc("STORE_UNAVAILABLE: the read model cannot be queried.")}
NOT_FOUND: Docs = {404: error_doc("ORDER_NOT_FOUND.")}


# Every signed route may answer these (gateway.auth.gate).
SIGNED: Docs = {
    401: error_doc("UNAUTHENTICATED, TIMESTAMP_OUT_OF_WINDOW or INVALID_SIGNATURE."),
    403: error_doc("FORBIDDEN: the key's role may not use this route, or names another user."),
    429: error_doc("RATE_LIMITED: over the key's limit; see the Retry-After header."),
}


def _doc_json(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": doc["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body is ``model`` (parsed by gateway.bodies)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def openapi_builder(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The spec with the request bodies as components and without FastAPI's 422s."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in REQUEST_MODELS:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        for template, path in spec.get("paths", {}).items():
            for method, operation in path.items():
                responses = operation.get("responses", {})
                responses.pop("422", None)
                if access_of(method.upper(), template) is not Access.PUBLIC:
                    for status, doc in SIGNED.items():
                        responses.setdefault(str(status), _doc_json(doc))
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = spec
        return spec

    return build

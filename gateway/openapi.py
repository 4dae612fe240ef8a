"""The OpenAPI document: route documentation helpers and the spec builder.

Request bodies are parsed by :mod:`gateway.bodies`, not by FastAPI, so the spec names the
pydantic models of :mod:`gateway.schemas` as the request bodies itself (``body_doc``), adds
them as components, and drops FastAPI's 422 answers (the API answers 400 instead).

The signature scheme is machine-readable too: three ``apiKey`` header schemes
(:data:`SECURITY_SCHEMES`), required together (:data:`SIGNED_REQUIREMENT`) by every operation
the gate signs, and the roles that may call it in ``x-roles``. Which operations those are
comes from the gate's own table (:func:`gateway.auth.policy.access_of`, asked with the
route's template exactly as the gate asks it), never from a list kept here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from gateway.auth.gate import iter_routes
from gateway.auth.policy import Access, access_of
from gateway.auth.principal import Role
from gateway.auth.signing import HEADER_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP
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
  account; operators manage users, keys and funds. Signed operations require the security
  schemes `ApiKey`, `Timestamp` and `Signature` together and list their roles in `x-roles`.
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


# components.securitySchemes: one apiKey scheme per signature header. OpenAPI cannot say how
# X-SIGNATURE is computed, so its description does (the contract of gateway.auth.signing).
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "ApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": HEADER_KEY,
        "description": 'The key id: "k" + the first 24 hex digits of sha256(raw public key), '
        'or "operator" for the configured operator key.',
    },
    "Timestamp": {
        "type": "apiKey",
        "in": "header",
        "name": HEADER_TIMESTAMP,
        "description": "Unix epoch milliseconds, within the window (default 5,000 ms) of the "
        "server's clock.",
    },
    "Signature": {
        "type": "apiKey",
        "in": "header",
        "name": HEADER_SIGNATURE,
        "description": "Base64 (standard alphabet, padded) of the Ed25519 signature of the "
        "UTF-8 bytes of timestamp + METHOD + request_target + body: the X-TIMESTAMP value, the "
        "upper-case method, the raw path and query string exactly as sent (percent-encoding "
        "kept) and the raw body (empty for a GET).",
    },
}

# All three headers together: one requirement object (AND), not three alternatives (OR).
SIGNED_REQUIREMENT: dict[str, list[str]] = {name: [] for name in SECURITY_SCHEMES}


def roles_of(access: Access) -> list[str]:
    """The roles that may call a route of this access (``x-roles``), in Role order."""
    return [role.value for role in Role if access.allows(role)]


def operation_access(app: FastAPI) -> dict[tuple[str, str], Access]:
    """(lower-case method, spec path) -> the access the gate applies to that operation.

    The spec names a path by its ``path_format`` (``/api/v1/order/{order_id}``) while the
    gate's table names the route's template (``/api/v1/order/{order_id:digits}``), so this
    asks :func:`access_of` with the route's template, as :meth:`AuthGate.bind` does.
    """
    found: dict[tuple[str, str], Access] = {}
    for route in iter_routes(app.routes):
        path = getattr(route, "path", None)
        path_format = getattr(route, "path_format", path)
        methods = getattr(route, "methods", None)
        if not isinstance(path, str) or not isinstance(path_format, str) or not methods:
            continue
        for method in methods:
            if method != "HEAD":
                found[(method.lower(), path_format)] = access_of(method, path)
    return found


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
        spec["components"]["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
        accesses = operation_access(app)
        for template, path in spec.get("paths", {}).items():
            for method, operation in path.items():
                responses = operation.get("responses", {})
                responses.pop("422", None)
                # Every operation comes from a route (get_openapi reads app.routes); were one
                # not to, its spec path still gets the table's answer (OPERATOR for /api/).
                access = accesses.get((method, template)) or access_of(method.upper(), template)
                if access is Access.PUBLIC:
                    continue
                operation["security"] = [copy.deepcopy(SIGNED_REQUIREMENT)]
                operation["x-roles"] = roles_of(access)
                for status, doc in SIGNED.items():
                    responses.setdefault(str(status), _doc_json(doc))
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = spec
        return spec

    return build

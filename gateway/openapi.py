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
"""

Docs = dict[int | str, dict[str, Any]]


def error_doc(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


BAD: Docs = {400: error_doc("Invalid request (see the error code).")}
TOO_LARGE: Docs = {413: error_doc("The body is too large.")}
BROKER: Docs = {503: error_doc("BROKER_UNAVAILABLE: the command was not accepted.")}
STORE: Docs = {503: error_doc("STORE_UNAVAILABLE: the read model cannot be queried.")}
NOT_FOUND: Docs = {404: error_doc("ORDER_NOT_FOUND.")}


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
        for path in spec.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = spec
        return spec

    return build

"""/openapi.json that says what the server does (checked by schemathesis in the tests).

FastAPI's generated schema is close but not true: it documents 422 for bodies (this server answers 400, like
OpenAI), lets `model` be any string (anything but a served name is a 404), and knows nothing of the error
bodies, `Retry-After`, or the event stream a `stream: true` request gets. This fixes those, once, lazily.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR = {"$ref": "#/components/schemas/ErrorBody"}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}}
# Status -> why, for every route that generates. 499 (the client left) is never seen by a client.
GENERATION_ERRORS = {
    "400": "Invalid body, unknown or unsupported field, or prompt + max_tokens beyond the context.",
    "404": "No model of that name is served.",
    "413": "The body is larger than max_body_bytes.",
    "429": "The queue is full; retry after Retry-After.",
    "500": "Generation failed.",
    "503": "The model is loading or failed, or the server is shutting down; retry after Retry-After.",
    "504": "The request ran past request_timeout_s.",
}
REQUEST_MODELS = ("ChatCompletionRequest", "CompletionRequest", "ChatRequest")


def pin_model(schema: dict[str, Any], names: list[str]) -> None:
    """`model` may only name a served model (optional fields stay optional)."""
    prop = schema.get("properties", {}).get("model")
    if prop is None:
        return
    pinned: dict[str, Any] = {"type": "string", "enum": names}
    if "anyOf" in prop:  # optional: the simple chat routes default to the first model
        prop["anyOf"] = [pinned, {"type": "null"}]
    else:
        prop.pop("type", None)
        prop.update(pinned)


def _error(description: str, status: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ERROR}}}
    if status in ("429", "503"):
        response["headers"] = RETRY_AFTER
    return response


def build_schema(app: FastAPI, models: list[str], public_paths: set[str] | None) -> dict[str, Any]:
    """`public_paths`: the paths served without a key; None when the server takes no keys at all."""
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    from llmforge.serve.schemas import ErrorBody

    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components["ErrorBody"] = error_schema
    for name in REQUEST_MODELS:
        if name in components:
            pin_model(components[name], models)
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            if method == "post":
                for status, why in GENERATION_ERRORS.items():
                    responses.setdefault(status, _error(why, status))
                body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
                for variant in body.get("oneOf", []):
                    pin_model(variant.get("items", variant), models)
            if public_paths is not None and path not in public_paths:
                responses.setdefault("401", _error("Missing or wrong API key.", "401"))
            if path == "/ready":
                responses.setdefault("503", _error("Not ready yet, or shutting down.", "503"))
    return schema


def document(app: FastAPI, models: list[str], public_paths: set[str] | None) -> None:
    """Serve the schema for these served names (called again after a reload changes them)."""
    app.openapi_schema = None

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_schema(app, models, public_paths)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

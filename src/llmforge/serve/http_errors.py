"""Every failure as OpenAI's error body `{"error": {"message", "type", "param", "code"}}`, with its status."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import JSONResponse

RETRY_AFTER_S = 1  # overload clears as fast as running requests finish; a short, honest hint

# OpenAI's `type` for each status this server returns.
TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
         405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
         499: "client_closed_request", 500: "server_error", 503: "service_unavailable", 504: "timeout"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, param=self.param, code=self.code, headers=self.headers)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error" if status >= 500 else
                                                             "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def overloaded(message: str) -> APIError:
    return APIError(429, message, code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})


def unavailable(message: str, retry_after_s: int = RETRY_AFTER_S) -> APIError:
    return APIError(503, message, code="service_unavailable", headers={"Retry-After": str(retry_after_s)})


_PATH_PREFIX = re.compile(r"^([\w.]+): ")  # a model validator's message that names its field ("prompt: ...")


def validation_message(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """The first of pydantic's `errors()` as one sentence, and the field it is about (OpenAI's `param`)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    # Union branches appear in loc as tags like 'constrained-str' or 'list[str]': not fields, so not shown.
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not re.search(r"[\[\-]", str(p))]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        return f"'{param}' is not supported by this server", param
    named = _PATH_PREFIX.match(msg)
    if param is None and named:
        return msg, named.group(1)
    return (f"{param}: {msg}" if param else msg), param

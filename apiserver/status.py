"""Errors as Kubernetes ``Status`` objects, converted to HTTP in exactly one place."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    410: "Expired",
    413: "RequestEntityTooLarge",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_CODES = {reason: code for code, reason in _REASONS.items()} | {"Gone": 410}


class StatusError(Exception):
    """A request failed in a way the client should see as a ``Status``."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details
        self.headers = headers

    @classmethod
    def from_reason(cls, reason: str, message: str) -> StatusError:
        return cls(_CODES.get(reason, 400), message, reason=reason)

    def body(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status

    def response(self) -> web.Response:
        return web.Response(
            status=self.code,
            body=orjson.dumps(self.body()),
            content_type="application/json",
            headers=self.headers,
        )


def not_found(resource: str, name: str, *, group: str = "") -> StatusError:
    label = f"{resource}.{group}" if group else resource
    return StatusError(
        404,
        f'{label} "{name}" not found',
        details={"name": name, "group": group, "kind": resource},
    )


def no_route() -> StatusError:
    return StatusError(404, "the server could not find the requested resource", details={})


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )

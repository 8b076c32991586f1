"""`APIError`: a user-facing error with its HTTP status and OpenAI's error fields.

Every failure a client can cause or see becomes ``{"error": {"message", "type", "param",
"code"}}`` with one of these statuses: 400 invalid input, 401 a wrong API key, 404 an
unknown route, 429 a full queue, 502 an upstream model server that failed the request,
503 an upstream server that cannot be reached or an engine that stopped. Left out: 403
and per-key quotas.
"""

from __future__ import annotations

from ..errors import MarginalError

TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
}


class APIError(MarginalError):
    """An error a request gets back as OpenAI's error JSON."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        err = {"message": self.message, "type": TYPES.get(self.status, "server_error"), "param": self.param}
        err["code"] = self.code
        return {"error": err}


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 for a bad request field."""
    return APIError(400, message, param=param, code=code or "invalid_value")


__all__ = ["TYPES", "APIError", "invalid"]

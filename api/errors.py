"""The one error shape, and the one place domain errors become HTTP answers:
``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from typing import Any

import marshmallow
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from cronhive.errors import (
    Conflict,
    CronhiveError,
    LeaseHeld,
    NotFound,
    PreconditionFailed,
    Unavailable,
    ValidationError,
)

log = logging.getLogger("cronhive.api")


class ApiError(CronhiveError):
    """An HTTP-level refusal raised by the API layer itself (bad query, auth, content type)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, details=details)
        self.status = status
        self.code = code
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   **top_level: Any) -> tuple[Response, int]:
    body: dict[str, Any] = {"error": {"code": code, "message": message, "details": details or {}}}
    body.update(top_level)
    return jsonify(body), status


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        response, status = error_response(exc.status, exc.code, exc.message, exc.details)
        response.headers.update(exc.headers)
        return response, status

    @app.errorhandler(marshmallow.ValidationError)
    def invalid_fields(exc: marshmallow.ValidationError) -> tuple[Response, int]:
        details = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        return error_response(422, "validation_error", "Some fields are not valid.", details)

    @app.errorhandler(CronhiveError)
    def domain_error(exc: CronhiveError) -> tuple[Response, int]:
        if isinstance(exc, NotFound):
            return error_response(404, exc.code, exc.message, exc.details)
        if isinstance(exc, PreconditionFailed):
            return error_response(412, exc.code, exc.message, exc.details)
        if isinstance(exc, LeaseHeld):
            return error_response(409, exc.code, exc.message, exc.details, lock_acquired=False)
        if isinstance(exc, Conflict):
            return error_response(409, exc.code, exc.message, exc.details)
        if isinstance(exc, ValidationError):
            return error_response(422, exc.code, exc.message, exc.details)
        if isinstance(exc, Unavailable):
            log.warning("dependency unavailable: %s", exc.message)
            response = error_response(503, exc.code, exc.message, exc.details)
            response[0].headers["Retry-After"] = "5"
            return response
        log.error("unhandled domain error", exc_info=exc)
        return error_response(500, "internal_error", "Internal error.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        if status == 413:
            message = "The request body is larger than 64 KiB."
        response, status = error_response(status, code, message)
        allowed = getattr(exc, "valid_methods", None)
        if status == 405 and allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response, status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "Internal error.")

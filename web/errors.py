"""Database refusals and HTTP errors become `{"detail": …}` answers, in one place."""
from __future__ import annotations

import logging

import psycopg
from flask import Flask, jsonify, make_response, render_template, request
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# SQLSTATEs our functions raise on purpose (see sql/10_app.sql), and unique violations.
STATUS_BY_SQLSTATE = {
    "P0400": 400,
    "P0401": 401,
    "P0402": 402,
    "P0403": 403,
    "P0404": 404,
    "P0409": 409,
    "P0422": 422,
    "P0429": 429,
    "23505": 409,
    "42501": 403,
}
# Seconds a client should wait when the database is unreachable.
RETRY_AFTER_OUTAGE = 2
# Seconds a throttled client should wait when the refusing function did not say.
RETRY_AFTER_THROTTLED = "60"


class ApiError(Exception):
    """An error with an HTTP status and a message for the client."""

    def __init__(self, status: int, detail: str, headers: dict | None = None, **extra):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def wants_json() -> bool:
    """API clients get JSON errors; browsers on pages get an HTML error page."""
    if request.path.startswith(("/v1/", "/healthz", "/openapi")):
        return True
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def error_response(status: int, detail: str, headers: dict | None = None, **extra):
    if wants_json():
        response = jsonify({"detail": detail, **extra})
    else:
        response = make_response(render_template("error.html", status=status, detail=detail))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = str(value)
    return response


def api_error_for(error: psycopg.Error) -> ApiError | None:
    """The client-facing refusal a database error stands for (our P04xx SQLSTATEs,
    unique and privilege violations), or None for a genuine fault."""
    sqlstate = getattr(error, "sqlstate", None) or ""
    status = STATUS_BY_SQLSTATE.get(sqlstate)
    if status is None:
        return None
    if sqlstate == "23505":
        return ApiError(409, "That already exists.")
    if sqlstate == "42501":
        return ApiError(403, "Not allowed.")
    extra = {"upgrade_url": "/pricing"} if status == 402 else {}
    headers = {"WWW-Authenticate": 'Bearer realm="story-genius"'} if status == 401 else {}
    if status == 429:
        # every 429 says when to come back: the function's DETAIL when it gave the seconds
        wait = error.diag.message_detail or ""
        headers["Retry-After"] = wait if wait.isascii() and wait.isdigit() else RETRY_AFTER_THROTTLED
    return ApiError(status, error.diag.message_primary or "Request refused.", headers, **extra)


def _database_error(error: psycopg.Error):
    refusal = api_error_for(error)
    if refusal is None:
        log.exception("database error %s on %s %s", error.sqlstate, request.method, request.path)
        return error_response(500, "Internal server error.")
    return error_response(refusal.status, refusal.detail, refusal.headers, **refusal.extra)


def _unavailable(error: Exception):
    log.warning("database unavailable on %s %s: %s", request.method, request.path, error)
    return error_response(503, "Service temporarily unavailable. Please retry.",
                          {"Retry-After": RETRY_AFTER_OUTAGE})


def init_app(app: Flask) -> None:
    """Register the handlers; every error leaves as JSON `{"detail": …}`."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        return error_response(error.status, error.detail, error.headers, **error.extra)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        # keep the exception's own headers (Allow on 405, WWW-Authenticate, Retry-After)
        headers = {name: value for name, value in error.get_headers()
                   if name.lower() not in ("content-type", "content-length")}
        return error_response(error.code or 500, error.description or error.name, headers)

    @app.errorhandler(psycopg.OperationalError)
    def _operational(error):
        return _unavailable(error)

    @app.errorhandler(psycopg.InterfaceError)
    def _connection_gone(error):
        # a pooled connection that died under us ("the connection is closed")
        return _unavailable(error)

    @app.errorhandler(PoolTimeout)
    def _pool_timeout(error):
        return _unavailable(error)

    @app.errorhandler(psycopg.Error)
    def _db_error(error):
        return _database_error(error)

    @app.errorhandler(Exception)
    def _unexpected(error):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "Internal server error.")

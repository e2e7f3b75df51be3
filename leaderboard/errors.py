"""Every error handler of the app, in one place: API v1 answers ``{"error": message}`` in
JSON, the web pages answer the error page; both take the HTTP status from the exception
class (``iugc.submissions.exceptions``: each class carries its ``status``).

The messages are the exceptions' own (one sentence, safe to show the person who caused
it); an unexpected error shows Werkzeug's generic server-error sentence, never its own text
(Flask logs it).
"""
from __future__ import annotations

import math

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from iugc.submissions.exceptions import ServiceError

API_PREFIX = "/api/v1/"
TITLES = {400: "Bad request", 401: "Not logged in", 403: "Not allowed", 404: "Not found", 405: "Not allowed",
          409: "Conflict", 413: "Too large", 422: "Not accepted", 429: "Too many requests", 500: "Server error",
          503: "Not available"}


def _is_api() -> bool:
    return request.path.startswith(API_PREFIX)


def service_error_json(exc: ServiceError):
    """``{"error": ...}`` with the class's status, and ``Retry-After`` for a quota or a rate
    (API v1, and the upload page's script, which asks for JSON)."""
    body = {"error": str(exc)}
    if getattr(exc, "field", None):
        body["field"] = exc.field  # the input at fault
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        body["retry_after"] = retry_after.isoformat()
    response = jsonify(body)
    if retry_after is not None:
        from iugc.submissions.models import utcnow

        response.headers["Retry-After"] = str(max(1, math.ceil((retry_after - utcnow()).total_seconds())))
    return response, exc.status


def _http_error_json(exc: HTTPException):
    messages = {404: "no such endpoint; see GET /api/v1/openapi.json", 405: f"{request.method} is not allowed here",
                413: "the upload is larger than the server accepts"}
    return jsonify({"error": messages.get(exc.code, exc.description)}), exc.code


def _page(code: int, message: str):
    return render_template("error.html", code=code, title=TITLES.get(code, "Error"), message=message), code


def _service_error(exc: ServiceError):
    return service_error_json(exc) if _is_api() else _page(exc.status, str(exc))


def _http_error(exc: HTTPException):
    if _is_api():
        return _http_error_json(exc)
    code, message = exc.code, exc.description  # an unexpected exception reaches here as Werkzeug's generic 500
    if isinstance(exc, CSRFError):
        message = "The form was not sent from this site or your session ended: reload the page and try again."
    if code == 429:
        message = f"Too many attempts ({exc.description}); wait a little and try again."
    return _page(code, message)


def register(app: Flask) -> None:
    """Install the handlers on ``app`` (``create_app`` calls it once). ``HTTPException``
    covers every status Werkzeug raises, a CSRF refusal, and the 500 that Flask makes of an
    unexpected exception (which it logs first)."""
    app.register_error_handler(ServiceError, _service_error)
    app.register_error_handler(HTTPException, _http_error)

"""The web pages beside API v1: one blueprint per area (auth, teams, challenge,
submissions, leaderboard, admin), Jinja2 templates in ``leaderboard/templates`` and one
stylesheet and script in ``leaderboard/static`` (no build step).

:func:`init_web` is called by ``create_app``; the pages read and change the records only
through ``submissions`` (reports, admin, uploads, queue) and ``leaderboard.web.queries``.
"""
from __future__ import annotations

import os

from flask import Flask, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from submissions.exceptions import ServiceError
from leaderboard.web.security import csrf, limiter, login_manager, secret_key

HTML_ERRORS = (400, 401, 403, 404, 405, 413, 429, 500)
TITLES = {400: "Bad request", 401: "Not logged in", 403: "Not allowed", 404: "Not found", 405: "Not allowed",
          409: "Conflict", 413: "Too large", 422: "Not accepted", 429: "Too many requests", 500: "Server error", 503: "Not available"}


def init_web(app: Flask, instance, test_config: dict | None) -> None:
    """Secret key, cookie flags, CSRF, rate limits, login and the page blueprints.

    ``test_config`` (``create_app``'s): its entries win over the defaults below, and with
    it (a test) a missing secret key is replaced by a random one.
    """
    from leaderboard.api import STATUS, api
    from leaderboard.api import _http_error as api_http_error
    from leaderboard.web import admin_pages, auth, challenge, submission_pages, teams
    from leaderboard.web import board

    given = test_config or {}
    app.config["SECRET_KEY"] = secret_key(given.get("SECRET_KEY"), instance, testing=test_config is not None)
    secure = os.environ.get("IUGC_COOKIE_SECURE", "1") != "0"
    defaults = dict(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_SAMESITE="Lax", REMEMBER_COOKIE_SECURE=secure,
        SESSION_COOKIE_NAME="iugc_session", WTF_CSRF_TIME_LIMIT=None,
        RATE_LIMIT_LOGIN="10 per minute", RATE_LIMIT_REGISTER="10 per hour", RATE_LIMIT_UPLOAD="30 per hour",
        RATELIMIT_HEADERS_ENABLED=True,
        SMTP_URL=os.environ.get("IUGC_SMTP_URL") or None,
        MAIL_FROM=os.environ.get("IUGC_MAIL_FROM") or "IUGC challenge platform <noreply@localhost>",
    )
    app.config.update({k: v for k, v in defaults.items() if k not in given})
    if app.config["SMTP_URL"]:
        from leaderboard.web.invitations import parse_smtp_url

        parse_smtp_url(app.config["SMTP_URL"])  # a bad URL stops the start with what to write
    csrf.init_app(app)
    csrf.exempt(api)  # bearer tokens, not cookies: nothing for a forged form to ride on
    limiter.init_app(app)
    login_manager.init_app(app)
    for blueprint in (auth.bp, challenge.bp, teams.bp, submission_pages.bp, board.bp, admin_pages.bp):
        app.register_blueprint(blueprint)

    def web_error(exc):
        if request.path.startswith(api.url_prefix + "/"):
            return api_http_error(exc)
        code = exc.code if isinstance(exc, HTTPException) else 500
        message = exc.description if isinstance(exc, HTTPException) else "something went wrong on the server"
        if isinstance(exc, CSRFError):
            message = "The form was not sent from this site or your session ended: reload the page and try again."
        if code == 429:
            message = f"Too many attempts ({exc.description}); wait a little and try again."
        return render_template("error.html", code=code, title=TITLES.get(code, "Error"), message=message), code

    def service_error(exc: ServiceError):  # the api blueprint's own handler answers its JSON
        code = next((c for cls, c in STATUS.items() if isinstance(exc, cls)), 500)
        return render_template("error.html", code=code, title=TITLES.get(code, "Error"), message=str(exc)), code

    for code in HTML_ERRORS:
        app.register_error_handler(code, web_error)
    app.register_error_handler(CSRFError, web_error)
    app.register_error_handler(ServiceError, service_error)

    app.add_template_filter(duration)
    app.add_template_filter(gigabytes)

    @app.after_request
    def _headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy",
                                        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
        return response


def duration(seconds: float) -> str:
    """A time limit as people say it.

    >>> duration(300), duration(1800), duration(3600), duration(5400), duration(45)
    ('5 min', '30 min', '1 h', '1.5 h', '45 s')
    """
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def gigabytes(megabytes: float) -> str:
    """A size in MB as GB, one decimal only when needed.

    >>> gigabytes(8192), gigabytes(10000), gigabytes(512)
    ('8 GB', '9.8 GB', '0.5 GB')
    """
    value = round(megabytes / 1024, 1)
    return f"{value:g} GB"

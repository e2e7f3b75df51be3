"""The web pages beside API v1: one blueprint per area (auth, teams, challenge,
submissions, leaderboard, admin), each in the module of its name rendering the templates of
the folder of its name in ``leaderboard/templates``, and one
stylesheet and script in ``leaderboard/static`` (no build step).

:func:`init_web` is called by ``create_app``; the pages read and change the records only
through ``submissions`` (reports, accounts, teams, challenges, uploads, queue).
"""
from __future__ import annotations

import os

from flask import Flask

from iugc.leaderboard.web.security import csrf, limiter, login_manager, secret_key



def init_web(app: Flask, instance, test_config: dict | None) -> None:
    """Secret key, cookie flags, CSRF, rate limits, login and the page blueprints.

    ``test_config`` (``create_app``'s): its entries win over the defaults below, and with
    it (a test) a missing secret key is replaced by a random one.
    """
    from iugc.leaderboard.api import api
    from iugc.leaderboard.web import admin, auth, challenge, leaderboard, submissions, teams

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
        from iugc.leaderboard.web.mail import parse_smtp_url

        parse_smtp_url(app.config["SMTP_URL"])  # a bad URL stops the start with what to write
    csrf.init_app(app)
    csrf.exempt(api)  # bearer tokens, not cookies: nothing for a forged form to ride on
    limiter.init_app(app)
    login_manager.init_app(app)
    for blueprint in (auth.bp, challenge.bp, teams.bp, submissions.bp, leaderboard.bp, admin.bp):
        app.register_blueprint(blueprint)

    app.add_template_filter(duration)
    app.add_template_filter(gigabytes)
    app.add_template_filter(pvalue)

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


def pvalue(p: float) -> str:
    """A p-value to three decimals; one too small for them says so instead of reading 0.000.

    >>> pvalue(0.0412), pvalue(0.0004), pvalue(1.0)
    ('0.041', '< 0.001', '1.000')
    """
    return "< 0.001" if p < 0.0005 else f"{p:.3f}"


def gigabytes(megabytes: float) -> str:
    """A size in MB as GB, one decimal only when needed.

    >>> gigabytes(8192), gigabytes(10000), gigabytes(512)
    ('8 GB', '9.8 GB', '0.5 GB')
    """
    value = round(megabytes / 1024, 1)
    return f"{value:g} GB"

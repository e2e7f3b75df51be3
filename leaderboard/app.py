"""The Flask application factory: ``create_app(test_config=None)``.

The app reads its settings from the environment (``iugc.submissions.config.Settings``) unless
``test_config`` gives them (``DATABASE_URL``, ``STORAGE_URL``, ``INSTANCE``), refuses a
database whose schema is not current (run ``iugc db upgrade``), and registers the ``api``
blueprint and the web pages (``iugc.leaderboard.web``; outside tests it needs a secret key). Uploads are parsed by Werkzeug into a temporary file (kept in memory only up
to 500 KB), then streamed to the staging folder; never held whole in memory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flask import Flask, current_app
from werkzeug.routing import IntegerConverter, UnicodeConverter

from iugc.submissions import db
from iugc.submissions.config import Settings
from iugc.submissions.exceptions import ConfigurationError
from iugc.submissions.storage import open_storage


@dataclass
class ServiceContext:
    """What the views use: sessions, storage, and ``wake`` (a new submission is queued);
    ``read_sessions`` for requests that only read (``db.read_session_factory``)."""

    settings: Settings
    engine: object
    sessions: object
    storage: object
    wake: Callable[[], None] = field(default=lambda: None)
    read_sessions: object = None


def service() -> ServiceContext:
    """The running app's service (sessions, storage, ``wake``): the one way views reach it,
    as flaskr's ``get_db()``."""
    return current_app.extensions["iugc"]


class RowNumber(IntegerConverter):
    """``<int:...>`` in every URL: a number a database column can hold (1 to 2**63 - 1);
    any other is no page (404) instead of an integer overflow in the database."""

    def __init__(self, map, fixed_digits=0, min=1, max=2**63 - 1, signed=False):
        super().__init__(map, fixed_digits, min, max, signed)


class Segment(UnicodeConverter):
    """A URL's text part (a slug, a name, a token): at most 1,000 characters and no NUL, which
    PostgreSQL can neither store nor compare; any other is no page (404)."""

    def __init__(self, map, minlength=1, maxlength=1000, length=None):
        super().__init__(map, minlength, maxlength, length)
        self.regex = self.regex.replace("[^/]", "[^/\x00]")


def rate_limit_defaults(broker_url: str | None, environ=None) -> dict:
    """API v1's per-token request rates and where the counters live, from the environment.

    ``IUGC_API_RATE_LIMIT`` (every authenticated endpoint) and ``IUGC_API_UPLOAD_RATE_LIMIT``
    (uploads, on top of it) take Flask-Limiter's notation. The counters are kept in Redis
    when the broker is Redis (every process of a deployment shares them), else in memory.

    >>> rate_limit_defaults(None, {})["API_RATE_LIMIT"], rate_limit_defaults("redis://q:6379/0", {})["RATELIMIT_STORAGE_URI"]
    ('120 per minute', 'redis://q:6379/0')
    """
    env = os.environ if environ is None else environ
    redis = broker_url is not None and broker_url.startswith(("redis://", "rediss://"))
    return {"API_RATE_LIMIT": env.get("IUGC_API_RATE_LIMIT") or "120 per minute",
            "API_UPLOAD_RATE_LIMIT": env.get("IUGC_API_UPLOAD_RATE_LIMIT") or "20 per hour",
            "RATELIMIT_STORAGE_URI": broker_url if redis else "memory://"}


def check_rate_limits(config) -> None:
    """ConfigurationError naming the setting whose rate Flask-Limiter cannot read.

    >>> check_rate_limits({"API_RATE_LIMIT": "5/second", "API_UPLOAD_RATE_LIMIT": "lots"})
    Traceback (most recent call last):
    ...
    iugc.submissions.exceptions.ConfigurationError: IUGC_API_UPLOAD_RATE_LIMIT (or the app's API_UPLOAD_RATE_LIMIT) is 'lots', not a rate: write it like '120 per minute' or '20/hour'
    """
    from limits import parse

    for name in ("API_RATE_LIMIT", "API_UPLOAD_RATE_LIMIT"):
        try:
            parse(config[name])
        except ValueError:
            raise ConfigurationError(f"IUGC_{name} (or the app's {name}) is {config[name]!r}, not a rate: "
                                     "write it like '120 per minute' or '20/hour'") from None


def create_app(test_config: dict | None = None) -> Flask:
    from iugc.leaderboard.api import api

    app = Flask(__name__, instance_path=None)
    app.url_map.converters.update(int=RowNumber, default=Segment, string=Segment)
    settings = Settings.from_env()
    config = test_config or {}
    settings = Settings(
        instance=Path(config.get("INSTANCE", settings.instance)),
        database_url=config.get("DATABASE_URL", settings.database_url),
        storage_url=config.get("STORAGE_URL", settings.storage_url),
        broker_url=config.get("BROKER_URL", settings.broker_url),
        s3_endpoint_url=config.get("S3_ENDPOINT_URL", settings.s3_endpoint_url),
    )
    app.config.update(JSON_SORT_KEYS=False, **rate_limit_defaults(settings.broker_url))
    app.config.update({k: v for k, v in config.items() if k.isupper()})
    check_rate_limits(app.config)
    engine = db.make_engine(settings.database_url)
    db.require_current_schema(engine)
    storage = open_storage(settings.storage_url, settings.instance, settings.s3_endpoint_url)
    app.extensions["iugc"] = ServiceContext(settings, engine, db.session_factory(engine), storage,
                                            read_sessions=db.read_session_factory(engine))
    app.register_blueprint(api)
    from iugc.leaderboard import errors

    errors.register(app)
    from iugc.leaderboard.web import init_web

    init_web(app, settings.instance, test_config)
    from iugc.leaderboard.kept_answers import KeptAnswers

    app.wsgi_app = KeptAnswers(app)  # the leaderboard page and API answers, kept in front of Flask
    return app

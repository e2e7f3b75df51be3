"""The Flask application factory: ``create_app(test_config=None)``.

The app reads its settings from the environment (``submissions.config.Settings``) unless
``test_config`` gives them (``DATABASE_URL``, ``STORAGE_URL``, ``INSTANCE``), refuses a
database whose schema is not current (run ``iugc db upgrade``), and registers the ``api``
blueprint and the web pages (``leaderboard.web``; outside tests it needs a secret key). Uploads are parsed by Werkzeug into a temporary file (kept in memory only up
to 500 KB), then streamed to the staging folder; never held whole in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flask import Flask

from submissions import db
from submissions.config import Settings
from submissions.storage import open_storage


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


def create_app(test_config: dict | None = None) -> Flask:
    from leaderboard.api import api

    app = Flask(__name__, instance_path=None)
    settings = Settings.from_env()
    config = test_config or {}
    settings = Settings(
        instance=Path(config.get("INSTANCE", settings.instance)),
        database_url=config.get("DATABASE_URL", settings.database_url),
        storage_url=config.get("STORAGE_URL", settings.storage_url),
        broker_url=config.get("BROKER_URL", settings.broker_url),
        s3_endpoint_url=config.get("S3_ENDPOINT_URL", settings.s3_endpoint_url),
    )
    app.config.update(JSON_SORT_KEYS=False, **{k: v for k, v in config.items() if k.isupper()})
    engine = db.make_engine(settings.database_url)
    db.require_current_schema(engine)
    storage = open_storage(settings.storage_url, settings.instance, settings.s3_endpoint_url)
    app.extensions["iugc"] = ServiceContext(settings, engine, db.session_factory(engine), storage,
                                            read_sessions=db.read_session_factory(engine))
    app.register_blueprint(api)
    from leaderboard.web import init_web

    init_web(app, settings.instance, test_config)
    return app

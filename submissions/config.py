"""Where the service keeps its state, from the environment.

- ``IUGC_INSTANCE``: the instance folder (default ``instance/`` in the working directory),
  holding the default SQLite database and the default storage folder.
- ``IUGC_DATABASE_URL``: an SQLAlchemy URL; default ``sqlite:///<instance>/iugc.sqlite3``
  (the embedded choice). PostgreSQL: ``postgresql+psycopg://user@host/db``.
- ``IUGC_STORAGE_URL``: default the folder ``<instance>/storage``; ``s3://bucket/prefix``
  for an S3-compatible store (endpoint from ``IUGC_S3_ENDPOINT_URL`` if set).
- ``IUGC_BROKER_URL``: unset for the embedded queue; ``redis://...`` for Celery.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    instance: Path
    database_url: str
    storage_url: str
    broker_url: str | None = None
    s3_endpoint_url: str | None = None

    @classmethod
    def from_env(cls, environ=None) -> "Settings":
        """Settings from ``environ`` (default ``os.environ``).

        >>> s = Settings.from_env({"IUGC_INSTANCE": "/srv/iugc"})
        >>> s.database_url, s.storage_url, s.broker_url
        ('sqlite:////srv/iugc/iugc.sqlite3', '/srv/iugc/storage', None)
        """
        env = os.environ if environ is None else environ
        instance = Path(env.get("IUGC_INSTANCE") or "instance").absolute()
        return cls(
            instance=instance,
            database_url=env.get("IUGC_DATABASE_URL") or f"sqlite:///{instance / 'iugc.sqlite3'}",
            storage_url=env.get("IUGC_STORAGE_URL") or str(instance / "storage"),
            broker_url=env.get("IUGC_BROKER_URL") or None,
            s3_endpoint_url=env.get("IUGC_S3_ENDPOINT_URL") or None,
        )

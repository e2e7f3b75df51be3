"""Database engine, sessions and the schema check.

SQLite (the embedded default) runs in WAL mode with foreign keys on, and every
transaction (but those of :func:`read_session_factory`) starts with ``BEGIN IMMEDIATE``: writers queue on the database lock at the
start of a transaction instead of failing half-way, so a check-then-insert inside one
transaction (quotas) cannot interleave with another. PostgreSQL uses row locks
(``SELECT ... FOR UPDATE``) for the same checks.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from iugc.submissions.exceptions import ConfigurationError, SchemaNotCurrent

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (SQLAlchemy form); SQLite gets WAL and immediate transactions.

    >>> make_engine("sqlite://").dialect.name
    'sqlite'
    """
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
            _configure_sqlite(engine)
            database = engine.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            return engine
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except (ArgumentError, ImportError) as exc:
        raise ConfigurationError(f"IUGC_DATABASE_URL {url!r} is not a usable database URL ({exc}); use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB") from None


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # transactions are begun below, not by pysqlite
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL's usual setting: safe across crashes, one fsync per checkpoint
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")  # deferred: in WAL mode readers never wait for the writer
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


READ_ONLY = "iugc_read_only"


def read_only(engine: Engine) -> Engine:
    """``engine`` for transactions that only read (leaderboards, authentication): on SQLite
    they start deferred, so concurrent readers do not queue on the write lock (and on its
    busy-wait sleeps) as ``BEGIN IMMEDIATE`` makes writers do. Never write through it."""
    return engine.execution_options(**{READ_ONLY: True})


def read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for requests that only read, on :func:`read_only`'s engine."""
    return sessionmaker(read_only(engine), expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]):
    """One transaction: committed when the block ends, rolled back (nothing kept) on error."""
    with sessions() as session, session.begin():
        yield session


def shown_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _alembic_config(connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The schema revision this version of the code needs."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise ConfigurationError(f"cannot open the database {shown_url(engine)}: {exc.orig}") from None


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Apply the migrations up to ``revision``; returns (revision before, revision after)."""
    from alembic import command

    before = current_revision(engine)
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), revision)
    return before, current_revision(engine)


def require_current_schema(engine: Engine) -> None:
    """Raise SchemaNotCurrent unless the database is at this code's revision, saying what to run."""
    from alembic.script import ScriptDirectory

    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    where = shown_url(engine)
    if current is None:
        raise SchemaNotCurrent(f"the database {where} has no schema: run `iugc db upgrade` first")
    known = {s.revision for s in ScriptDirectory.from_config(_alembic_config(None)).walk_revisions()}
    if current not in known:
        raise SchemaNotCurrent(f"the database {where} is at revision {current}, newer than this version of iugc knows (head {head}): upgrade iugc")
    raise SchemaNotCurrent(f"the database {where} is at revision {current}, older than this version needs ({head}): run `iugc db upgrade`")

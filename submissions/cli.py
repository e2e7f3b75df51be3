"""``iugc db ...``: the service's database."""
from __future__ import annotations

import click


@click.group("db")
def db_group():
    """The service's database (IUGC_DATABASE_URL; default SQLite under IUGC_INSTANCE)."""


@db_group.command("upgrade")
def upgrade_cmd():
    """Create the schema or bring it to this version (Alembic migrations); safe to repeat.

    `iugc serve` and `iugc worker` refuse to start until this has been run.
    """
    from submissions import db
    from submissions.config import Settings
    from submissions.exceptions import ServiceError

    try:
        engine = db.make_engine(Settings.from_env().database_url)
        before, after = db.upgrade(engine)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    where = db.shown_url(engine)
    if before == after:
        click.echo(f"{where}: already at revision {after}")
    else:
        click.echo(f"{where}: upgraded from {before or 'an empty database'} to revision {after}")

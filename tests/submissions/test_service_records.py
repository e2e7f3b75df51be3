"""The service's records: migrations, the schema check, and the constraints the service
relies on, on SQLite (WAL) and on PostgreSQL."""
from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from iugc.submissions import db
from iugc.submissions.exceptions import SchemaNotCurrent
from iugc.submissions.models import (
    AuditEntry,
    Base,
    Challenge,
    Evaluation,
    Membership,
    Phase,
    Role,
    State,
    Submission,
    Team,
    User,
)
from tests.service_support import database_url, postgres_cluster  # noqa: F401 (fixtures)


@pytest.fixture
def engine(database_url):
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def migrated(engine):
    db.upgrade(engine)
    return engine


def _team_and_submission(session):
    challenge = Challenge(name="psfhs2023", title="t", definition={}, definition_sha256="0" * 64)
    phase = Phase(challenge=challenge, name="p", slug="psfhs2023-p", title="P", kind="validation",
                  submissions_per_day=2, failures_count=True, logs_visible=False, public_cases=False, limits={})
    user = User(email="a@example.org", role=Role.participant)
    team = Team(challenge=challenge, name="alpha")
    session.add_all([challenge, phase, user, team])
    session.flush()
    submission = Submission(team_id=team.id, phase_id=phase.id, uploader_id=user.id, archive_sha256="a" * 64, archive_size=3 * 2**31)
    session.add(submission)
    session.flush()
    return team, submission, user, challenge


def test_upgrade_creates_the_schema_the_models_describe(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    assert db.current_revision(engine) is None
    before, after = db.upgrade(engine)
    assert (before, after) == (None, db.head_revision())
    assert db.upgrade(engine) == (after, after)  # a second run changes nothing
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_an_empty_database_is_refused_with_the_command_to_run(engine):
    with pytest.raises(SchemaNotCurrent, match=r"has no schema: run `iugc db upgrade`"):
        db.require_current_schema(engine)


def test_a_database_from_a_newer_version_is_refused(migrated):
    with migrated.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    with pytest.raises(SchemaNotCurrent, match="newer than this version of iugc knows"):
        db.require_current_schema(migrated)


def test_a_downgraded_database_is_refused_then_accepted_after_upgrade(migrated):
    from alembic import command

    with migrated.begin() as connection:
        command.downgrade(db._alembic_config(connection), "base")
    with pytest.raises(SchemaNotCurrent, match="iugc db upgrade"):
        db.require_current_schema(migrated)
    db.upgrade(migrated)
    db.require_current_schema(migrated)


def test_iugc_db_upgrade_command(database_url, tmp_path):
    from iugc.cli import main

    env = {"IUGC_DATABASE_URL": database_url, "IUGC_INSTANCE": str(tmp_path)}
    first = CliRunner().invoke(main, ["db", "upgrade"], env=env)
    assert first.exit_code == 0, first.output
    assert f"to revision {db.head_revision()}" in first.output
    second = CliRunner().invoke(main, ["db", "upgrade"], env=env)
    assert second.exit_code == 0 and "already at revision" in second.output


def test_iugc_db_upgrade_with_a_bad_url_says_what_to_use(tmp_path):
    from iugc.cli import main

    result = CliRunner().invoke(main, ["db", "upgrade"], env={"IUGC_DATABASE_URL": "nonsense://x"})
    assert result.exit_code == 1
    assert "not a usable database URL" in result.output and "Traceback" not in result.output


def test_sqlite_runs_in_wal_mode(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_times_come_back_as_utc_and_large_archives_fit(migrated):
    sessions = db.session_factory(migrated)
    with db.transaction(sessions) as session:
        _, submission, _, _ = _team_and_submission(session)
        sid = submission.id
    with sessions() as session:
        back = session.get(Submission, sid)
        assert back.created_at.tzinfo == dt.timezone.utc
        assert abs((dt.datetime.now(dt.timezone.utc) - back.created_at).total_seconds()) < 60
        assert back.archive_size == 3 * 2**31  # over 32 bits


def test_the_audit_log_is_append_only_in_the_orm_and_in_the_database(migrated):
    sessions = db.session_factory(migrated)
    with db.transaction(sessions) as session:
        session.add(AuditEntry(action="init", target="challenge:psfhs2023"))
    with pytest.raises(PermissionError, match="append-only"):
        with db.transaction(sessions) as session:
            entry = session.query(AuditEntry).one()
            entry.action = "forged"
    for statement in ("UPDATE audit_log SET action = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            with migrated.begin() as connection:
                connection.execute(text(statement))
    with sessions() as session:
        assert [e.action for e in session.query(AuditEntry)] == ["init"]


def test_at_most_one_running_evaluation_per_team(migrated):
    sessions = db.session_factory(migrated)
    with db.transaction(sessions) as session:
        team, submission, _, _ = _team_and_submission(session)
        for number in (1, 2, 3):
            session.add(Evaluation(submission_id=submission.id, team_id=team.id, number=number, status=State.queued))
    with db.transaction(sessions) as session:
        session.execute(text("UPDATE evaluations SET status = 'running' WHERE number = 1"))
    with pytest.raises(IntegrityError):
        with db.transaction(sessions) as session:
            session.execute(text("UPDATE evaluations SET status = 'running' WHERE number = 2"))
    with sessions() as session:
        states = sorted((e.number, e.status) for e in session.query(Evaluation))
    assert states == [(1, State.running), (2, State.queued), (3, State.queued)]


def test_a_user_belongs_to_one_team_per_challenge(migrated):
    sessions = db.session_factory(migrated)
    with db.transaction(sessions) as session:
        team, _, user, challenge = _team_and_submission(session)
        session.add(Membership(team_id=team.id, user_id=user.id, challenge_id=challenge.id))
        ids = (user.id, challenge.id)
    with pytest.raises(IntegrityError):
        with db.transaction(sessions) as session:
            other = Team(challenge_id=ids[1], name="beta")
            session.add(other)
            session.flush()
            session.add(Membership(team_id=other.id, user_id=ids[0], challenge_id=ids[1]))
    with sessions() as session:
        assert session.query(Team).count() == 1  # the whole transaction was rolled back
